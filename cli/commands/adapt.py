"""``hps adapt``: adapt Stable Diffusion to human preference with HPS (LoRA), from images it
generates (``--source generated``), from harvested image sets (``harvested``), or both."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cli.output import print_json

if TYPE_CHECKING:
    from cli.harvested_sets import HarvestedSets
    from hps.diffusion.adapt import AdaptConfig

SOURCES = ("generated", "harvested", "both")


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps adapt`` to the ``hps`` parser."""
    adapt = subcommands.add_parser("adapt", help="adapt Stable Diffusion with HPS (LoRA)")
    adapt.add_argument(
        "--pipeline",
        required=True,
        help="diffusers folder, checkpoint, a catalogue name fetched with `hps models fetch` "
        "(sd-1.5, sdxl), 'tiny' (random weights) or 'toy' (small pretrained)",
    )
    adapt.add_argument("--arch", help="HPS architecture")
    adapt.add_argument("--checkpoint", help="HPS weights (a file, or an hps train --out folder)")
    adapt.add_argument(
        "--source",
        choices=SOURCES,
        default="generated",
        help="where the training examples come from: images generated for --prompts and "
        "selected (the default), the image sets of --harvested, or both",
    )
    adapt.add_argument("--prompts", help="training prompts, one per line (generated, both)")
    adapt.add_argument(
        "--harvested",
        help="an export folder of this platform, or an HPD JSON / Pick-a-Pic parquet manifest "
        "(harvested, both)",
    )
    adapt.add_argument(
        "--eval-prompts",
        help="held-out prompts, one per line (default with --harvested: its test split's)",
    )
    adapt.add_argument(
        "--no-human-picks",
        dest="human_picks",
        action="store_false",
        help="harvested sets: do not add the humans' picks as positives",
    )
    adapt.add_argument("--out", required=True)
    adapt.add_argument("--images-per-prompt", type=int, default=8)
    adapt.add_argument("--inference-steps", type=int, default=25)
    adapt.add_argument("--lora-steps", type=int, default=1000)
    adapt.add_argument("--lr", type=float, default=1e-5)
    adapt.add_argument("--rank", type=int, default=4)
    adapt.add_argument("--batch-size", type=int, default=4)
    adapt.add_argument("--alpha", type=float, default=2.0)
    adapt.add_argument(
        "--negative-alone",
        type=float,
        help="share of a negative's training draws captioned with the negative prompt alone "
        "(what inference uses) instead of negative prompt + prompt (default 0.5; 0: the "
        "paper's captions only)",
    )
    adapt.add_argument(
        "--eval-images-per-prompt",
        type=int,
        help="images per held-out prompt in each of the three evaluation arms (default 4)",
    )
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

    given = {"eval_images_per_prompt": args.eval_images_per_prompt}
    lora_given = {"negative_alone": args.negative_alone}
    return AdaptConfig(
        **{key: value for key, value in given.items() if value is not None},
        images_per_prompt=args.images_per_prompt,
        alpha=args.alpha,
        blur_threshold=args.blur_threshold,
        inference_steps=args.inference_steps,
        seed=args.seed,
        human_picks=args.human_picks,
        lora=LoraConfig(
            rank=args.rank,
            lr=args.lr,
            steps=args.lora_steps,
            batch_size=args.batch_size,
            seed=args.seed,
            **{key: value for key, value in lora_given.items() if value is not None},
        ),
    )


def training_data(
    args: argparse.Namespace, min_images: int
) -> tuple[list[str], HarvestedSets | None, list[str]]:
    """(training prompts, harvested sets, evaluation prompts) for ``--source``; ValueError
    when an option the source needs is missing."""
    from cli.harvested_sets import read_harvested

    generating = args.source in ("generated", "both")
    harvesting = args.source in ("harvested", "both")
    if generating and not args.prompts:
        raise ValueError(f"--source {args.source} needs --prompts")
    if harvesting and not args.harvested:
        raise ValueError(f"--source {args.source} needs --harvested")
    if args.harvested and not harvesting:
        raise ValueError("--harvested is read with --source harvested or both")
    if args.prompts and not generating:
        raise ValueError("--prompts is read with --source generated or both")
    harvested = read_harvested(Path(args.harvested), min_images) if harvesting else None
    if harvested is not None and not harvested.train and not generating:
        raise ValueError(f"{args.harvested}: no image set of {min_images}+ images to train on")
    if args.eval_prompts:
        eval_prompts = read_prompts(args.eval_prompts)
    elif harvested is not None and harvested.held_out_prompts:
        eval_prompts = harvested.held_out_prompts
    else:
        raise ValueError("give --eval-prompts (held-out prompts, one per line)")
    return (read_prompts(args.prompts) if generating else []), harvested, eval_prompts


def catalogue_models_dir(pipeline: str) -> Path | None:
    """MODELS_DIR when ``pipeline`` is a catalogue name (it resolves to what ``hps models
    fetch`` recorded there), else None (the settings are not read)."""
    from hps.catalogue import load_catalogue

    if pipeline not in load_catalogue():
        return None
    from config import get_settings

    return get_settings().models_dir


def cmd_adapt(args: argparse.Namespace) -> int:
    """Run the adaptation recipe with a progress bar; print the LoRA's metadata."""
    from tqdm import tqdm

    from hps.device import resolve_device
    from hps.diffusion.adapt import adapt
    from hps.diffusion.pipelines import open_pipeline
    from hps.scoring import build_scorer

    if not args.arch and not args.checkpoint:
        raise ValueError("give the HPS model: --arch, --checkpoint, or both")
    config = adapt_config(args)
    train_prompts, harvested, eval_prompts = training_data(args, config.min_images)
    device = resolve_device(args.device)
    pipe = open_pipeline(
        args.pipeline, device, seed=args.seed, models_dir=catalogue_models_dir(args.pipeline)
    )
    scorer = build_scorer(args.arch, args.checkpoint, device=str(device))
    with tqdm(total=100, unit="%", desc="adapting") as bar:

        def progress(fraction: float, message: str) -> bool:
            bar.set_postfix_str(message[:40])
            bar.update(round(100 * fraction) - bar.n)
            return True

        result = adapt(
            pipe,
            scorer,
            train_prompts,
            eval_prompts,
            Path(args.out),
            config,
            harvested=harvested.train if harvested is not None else (),
            regularization=Path(args.regularization) if args.regularization else None,
            base_description=args.pipeline,
            progress=progress,
        )
    metadata = result.metadata
    if harvested is not None:
        selection = metadata["selection"]
        for key in ("skipped_small", "harvested_sets"):
            selection[key] = selection.get(key, 0) + harvested.skipped_small
    print_json({**metadata, "lora_dir": str(result.lora_dir)})
    return 0
