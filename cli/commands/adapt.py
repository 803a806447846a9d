"""``hps adapt``: adapt Stable Diffusion to human preference with HPS (LoRA)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cli.output import print_json

if TYPE_CHECKING:
    from hps.diffusion.adapt import AdaptConfig


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps adapt`` to the ``hps`` parser."""
    adapt = subcommands.add_parser("adapt", help="adapt Stable Diffusion with HPS (LoRA)")
    adapt.add_argument("--pipeline", required=True, help="diffusers folder, checkpoint, or 'tiny'")
    adapt.add_argument("--arch", help="HPS architecture")
    adapt.add_argument("--checkpoint", help="HPS weights")
    adapt.add_argument("--prompts", required=True, help="training prompts, one per line")
    adapt.add_argument("--eval-prompts", required=True, help="held-out prompts, one per line")
    adapt.add_argument("--out", required=True)
    adapt.add_argument("--images-per-prompt", type=int, default=8)
    adapt.add_argument("--inference-steps", type=int, default=25)
    adapt.add_argument("--lora-steps", type=int, default=1000)
    adapt.add_argument("--lr", type=float, default=1e-5)
    adapt.add_argument("--rank", type=int, default=4)
    adapt.add_argument("--batch-size", type=int, default=4)
    adapt.add_argument("--alpha", type=float, default=2.0)
    adapt.add_argument("--blur-threshold", type=float, default=0.0)
    adapt.add_argument("--regularization", help="folder of images with .txt captions")
    adapt.add_argument("--device", default="auto")
    adapt.add_argument("--seed", type=int, default=0)
    adapt.set_defaults(handler=cmd_adapt)


def read_prompts(path: str) -> list[str]:
    """The non-empty lines of a prompts file (at least one)."""
    prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def adapt_config(args: argparse.Namespace) -> AdaptConfig:
    """The adaptation recipe's configuration from the command line."""
    from hps.diffusion.adapt import AdaptConfig
    from hps.diffusion.lora_training import LoraConfig

    return AdaptConfig(
        images_per_prompt=args.images_per_prompt,
        alpha=args.alpha,
        blur_threshold=args.blur_threshold,
        inference_steps=args.inference_steps,
        seed=args.seed,
        lora=LoraConfig(
            rank=args.rank,
            lr=args.lr,
            steps=args.lora_steps,
            batch_size=args.batch_size,
            seed=args.seed,
        ),
    )


def cmd_adapt(args: argparse.Namespace) -> int:
    """Run the adaptation recipe with a progress bar; print the LoRA's metadata."""
    from tqdm import tqdm

    from hps.device import resolve_device
    from hps.diffusion.adapt import adapt
    from hps.diffusion.pipelines import open_pipeline
    from hps.scoring import build_scorer

    if not args.arch and not args.checkpoint:
        raise ValueError("give the HPS model: --arch, --checkpoint, or both")
    device = resolve_device(args.device)
    pipe = open_pipeline(args.pipeline, device, seed=args.seed)
    scorer = build_scorer(args.arch, args.checkpoint, device=str(device))
    config = adapt_config(args)
    with tqdm(total=100, unit="%", desc="adapting") as bar:

        def progress(fraction: float, message: str) -> bool:
            bar.set_postfix_str(message[:40])
            bar.update(round(100 * fraction) - bar.n)
            return True

        result = adapt(
            pipe,
            scorer,
            read_prompts(args.prompts),
            read_prompts(args.eval_prompts),
            Path(args.out),
            config,
            regularization=Path(args.regularization) if args.regularization else None,
            base_description=args.pipeline,
            progress=progress,
        )
    print_json({**result.metadata, "lora_dir": str(result.lora_dir)})
    return 0
