"""``hps score | train | eval | models``: the science from the command line.

This module imports nothing heavy at import time (the ``hps`` command starts fast for every
subcommand); torch and open_clip load inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add the model subcommands to the ``hps`` parser."""
    score = subcommands.add_parser("score", help="score images against a prompt (JSON out)")
    _model_arguments(score)
    score.add_argument("--prompt", required=True, help="the prompt the images were made for")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("images", nargs="+", metavar="IMAGE")
    score.set_defaults(handler=cmd_score)

    train = subcommands.add_parser("train", help="fine-tune an HPS model on preference data")
    train.add_argument("--arch", help="architecture (see `hps models list`)")
    train.add_argument("--checkpoint", help="starting weights (default: random init)")
    train.add_argument("--data", required=True, help="training manifest")
    train.add_argument("--val-data", help="held-out manifest evaluated at the end")
    train.add_argument("--image-root", help="folder relative image paths start from")
    train.add_argument("--out", required=True, help="output folder")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None)
    length.add_argument("--steps", type=int, default=None, help="optimiser steps")
    train.add_argument("--lr", type=float, default=1.7e-5)
    train.add_argument("--weight-decay", type=float, default=3.1e-3)
    train.add_argument("--batch-size", type=int, default=5, help="preference sets per step")
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--warmup-ratio", type=float, default=0.05)
    train.add_argument("--vision-layers", type=int, default=10, help="last N vision blocks")
    train.add_argument("--text-layers", type=int, default=6, help="last N text blocks")
    train.add_argument("--grad-checkpointing", action="store_true")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument("--no-resume", action="store_true", help="ignore a saved training state")
    train.set_defaults(handler=cmd_train)

    evaluate = subcommands.add_parser("eval", help="accuracy on held-out preference data")
    _model_arguments(evaluate)
    evaluate.add_argument("--data", required=True, help="held-out manifest")
    evaluate.add_argument("--image-root")
    evaluate.add_argument("--baseline-checkpoint", help="the untuned model it started from")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--report", help="folder for evaluation.json + evaluation.md")
    evaluate.set_defaults(handler=cmd_eval)

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

    models = subcommands.add_parser("models", help="architectures and checkpoints")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    models_sub.add_parser("list", help="registered architectures and published checkpoints")
    inspect = models_sub.add_parser("inspect", help="describe a checkpoint file")
    inspect.add_argument("path")
    fetch = models_sub.add_parser("fetch", help="download a published checkpoint (explicit)")
    fetch.add_argument("name", help="a published name (see list) or an https URL")
    fetch.add_argument("--out", help="target file (default: ./models/<file name>)")
    fetch.add_argument(
        "--sha256", help="expected sha256 of the download (a mismatch keeps nothing)"
    )
    fetch.add_argument(
        "--max-gib", type=float, default=16.0, help="refuse downloads larger than this (GiB)"
    )
    models.set_defaults(handler=cmd_models)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", help="architecture (see `hps models list`)")
    parser.add_argument("--checkpoint", help="weights (default: random init, for timing)")
    parser.add_argument("--sha256", help="expected sha256 of the checkpoint")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--preprocess", choices=["pad", "crop"], default=None)


def _need_model(args: argparse.Namespace) -> None:
    if not args.arch and not args.checkpoint:
        raise ValueError("give --arch, --checkpoint, or both")
    if not args.checkpoint:
        print(f"hps: no --checkpoint: {args.arch} has random weights", file=sys.stderr)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def cmd_score(args: argparse.Namespace) -> int:
    from hps.factory import build_scorer

    _need_model(args)
    scorer = build_scorer(
        args.arch,
        args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        preprocess=args.preprocess,
        sha256=args.sha256,
    )
    scores = scorer.score(args.prompt, args.images, batch_size=args.batch_size)
    _print_json(
        [
            {"image": image, "score": round(s, 4)}
            for image, s in zip(args.images, scores, strict=True)
        ]
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hps.checkpoints import sha256_of_file
    from hps.training.manifests import load_manifest
    from hps.training.trainer import TrainConfig, train

    if not args.arch and not args.checkpoint:
        raise ValueError("give --arch, --checkpoint, or both")
    sets = load_manifest(args.data, args.image_root)
    val_sets = load_manifest(args.val_data, args.image_root) if args.val_data else None
    config = TrainConfig(
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        epochs=args.epochs or 1,
        steps=args.steps,
        warmup_ratio=args.warmup_ratio,
        grad_accum=args.grad_accum,
        vision_layers=args.vision_layers,
        text_layers=args.text_layers,
        seed=args.seed,
        grad_checkpointing=args.grad_checkpointing,
        device=args.device,
    )
    trained_on = {
        "manifest": str(Path(args.data).resolve()),
        "manifest_sha256": sha256_of_file(Path(args.data)),
        "sets": len(sets),
    }
    result = train(
        args.arch,
        args.checkpoint,
        sets,
        args.out,
        config,
        val_sets=val_sets,
        trained_on=trained_on,
        resume=not args.no_resume,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 wrote files and reports them
    _print_json(
        {
            "checkpoint": str(result.checkpoint),
            "steps": result.steps,
            "final_loss": result.final_loss,
            "checkpoint_sha256": result.checkpoint_sha256,
            "metrics": str(result.metrics_file),
            "curve": str(result.curve_file) if result.curve_file else None,
            **result.extra,
        }
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from hps.evaluation import Comparison, evaluate, write_report
    from hps.factory import load_model
    from hps.scoring import HpsScorer
    from hps.training.manifests import load_manifest

    if not args.arch and not args.checkpoint:
        raise ValueError("give --arch, --checkpoint, or both")
    sets = load_manifest(args.data, args.image_root)
    loaded = load_model(args.arch, args.checkpoint, sha256=args.sha256)
    baseline, baseline_name = _load_baseline(args, loaded)
    options = {"device": args.device, "dtype": args.dtype, "preprocess": args.preprocess}
    model_metrics = evaluate(
        HpsScorer.from_loaded(loaded, **options), sets, batch_size=args.batch_size
    )
    baseline_metrics = evaluate(
        HpsScorer.from_loaded(baseline, **options), sets, batch_size=args.batch_size
    )
    comparison = Comparison(
        model_metrics,
        baseline_metrics,
        args.checkpoint or f"{loaded.architecture.name} (random)",
        baseline_name,
    )
    if args.report:
        write_report(comparison, Path(args.report))
    _print_json(comparison.as_dict())
    return 0


def _load_baseline(args: argparse.Namespace, loaded: Any) -> tuple[Any, str]:
    """The untuned model the evaluated one started from."""
    import torch

    from hps.architectures import build_model
    from hps.factory import LoadedModel, load_model

    architecture = loaded.architecture
    if args.baseline_checkpoint:
        return load_model(architecture.name, args.baseline_checkpoint), args.baseline_checkpoint
    base = loaded.metadata.get("base") or {}
    if base.get("kind") == "checkpoint":
        return load_model(architecture.name, base["path"], sha256=base.get("sha256")), base["path"]
    if base.get("kind") == "random-init" or not args.checkpoint:
        torch.manual_seed(int(base.get("seed", 0)))
        return LoadedModel(build_model(architecture), architecture), "random init"
    raise ValueError(
        "this checkpoint does not record what it was trained from; "
        "give --baseline-checkpoint (the untuned CLIP it started from)"
    )


def _read_prompts(path: str) -> list[str]:
    prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def cmd_adapt(args: argparse.Namespace) -> int:
    import torch

    from hps.device import resolve_device
    from hps.diffusion.adapt import AdaptConfig, adapt
    from hps.diffusion.lora_training import LoraConfig
    from hps.diffusion.pipelines import build_tiny_pipeline, load_pipeline
    from hps.factory import build_scorer

    if not args.arch and not args.checkpoint:
        raise ValueError("give the HPS model: --arch, --checkpoint, or both")
    device = resolve_device(args.device)
    if args.pipeline == "tiny":
        pipe = build_tiny_pipeline(seed=args.seed).to(device)
    else:
        dtype = torch.float16 if device.type == "cuda" else None
        pipe = load_pipeline(args.pipeline, device=str(device), dtype=dtype)
    scorer = build_scorer(args.arch, args.checkpoint, device=str(device))
    config = AdaptConfig(
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
    from tqdm import tqdm

    with tqdm(total=100, unit="%", desc="adapting") as bar:

        def progress(fraction: float, message: str) -> bool:
            bar.set_postfix_str(message[:40])
            bar.update(round(100 * fraction) - bar.n)
            return True

        result = adapt(
            pipe,
            scorer,
            _read_prompts(args.prompts),
            _read_prompts(args.eval_prompts),
            Path(args.out),
            config,
            regularization=Path(args.regularization) if args.regularization else None,
            base_description=args.pipeline,
            progress=progress,
        )
    _print_json({**result.metadata, "lora_dir": str(result.lora_dir)})
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        from hps.architectures import get_architecture, list_architectures
        from hps.fetch import PUBLISHED

        _print_json(
            {
                "architectures": {
                    name: get_architecture(name).description for name in list_architectures()
                },
                "published_checkpoints": {
                    name: {"architecture": c.architecture, "url": c.url, "sha256": c.sha256}
                    for name, c in PUBLISHED.items()
                },
            }
        )
        return 0
    if args.models_command == "inspect":
        return _inspect(Path(args.path))
    return _fetch(args)


def _inspect(path: Path) -> int:
    from hps.checkpoints import load_checkpoint, sha256_of_file
    from hps.factory import infer_architecture

    state, metadata = load_checkpoint(path)
    architecture = metadata.get("architecture") or infer_architecture(state).name
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    _print_json(
        {
            "path": str(path),
            "sha256": sha256_of_file(path),
            "architecture": architecture,
            "parameters": sum(t.numel() for t in state.values()),
            "dtypes": dtypes,
            "metadata": metadata,
        }
    )
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hps.fetch import PUBLISHED, fetch

    published = PUBLISHED.get(args.name)
    url = published.url if published else args.name
    if not published and not url.startswith("https://"):
        raise ValueError(f"{args.name!r} is neither a published name nor an https URL")
    target = Path(args.out) if args.out else Path("models") / url.rsplit("/", 1)[-1]
    sha256 = args.sha256 or (published.sha256 if published else None)
    with tqdm(unit="B", unit_scale=True, desc=target.name, file=sys.stderr) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        fetched = fetch(
            url,
            target,
            sha256=sha256,
            on_progress=progress,
            max_bytes=int(args.max_gib * 1024**3),
        )
    _print_json(
        {
            "path": str(fetched.path),
            "sha256": fetched.sha256,
            "bytes": fetched.size,
            "sha256_file": str(fetched.sidecar),
            "pinned": bool(sha256),
        }
    )
    return 0
