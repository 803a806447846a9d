"""``hps train``: fine-tune an HPS model on preference data."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cli.model_options import require_model
from cli.output import print_json

if TYPE_CHECKING:
    from hps.training.trainer import TrainConfig


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps train`` to the ``hps`` parser."""
    train = subcommands.add_parser("train", help="fine-tune an HPS model on preference data")
    train.add_argument("--arch", help="architecture (see `hps models list`)")
    train.add_argument(
        "--checkpoint",
        help="starting weights: a checkpoint file or an `hps train --out` folder "
        "(default: random init)",
    )
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


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The trainer's configuration from the command line."""
    from hps.training.trainer import TrainConfig

    return TrainConfig(
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


def cmd_train(args: argparse.Namespace) -> int:
    """Train; rank 0 prints where the checkpoint, metrics and curve are."""
    from hps.checkpoints import resolve_checkpoint, sha256_of_file
    from hps.training.manifests import load_manifest
    from hps.training.trainer import train

    require_model(args)
    sets = load_manifest(args.data, args.image_root)
    val_sets = load_manifest(args.val_data, args.image_root) if args.val_data else None
    trained_on = {
        "manifest": str(Path(args.data).resolve()),
        "manifest_sha256": sha256_of_file(Path(args.data)),
        "sets": len(sets),
    }
    # The file itself, not its folder: the new model records (and hashes) what it started from.
    start = resolve_checkpoint(args.checkpoint) if args.checkpoint else None
    result = train(
        args.arch,
        start,
        sets,
        args.out,
        train_config(args),
        val_sets=val_sets,
        trained_on=trained_on,
        resume=not args.no_resume,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 wrote files and reports them
    print_json(
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
