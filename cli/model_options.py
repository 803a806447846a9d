"""The options naming an HPS model (``hps score`` and ``hps eval`` share them)."""

from __future__ import annotations

import argparse
import sys


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--arch``, ``--checkpoint``, ``--sha256``, ``--device``, ``--dtype``, ``--preprocess``."""
    parser.add_argument("--arch", help="architecture (see `hps models list`)")
    parser.add_argument(
        "--checkpoint",
        help="weights: a checkpoint file or an `hps train --out` folder "
        "(default: random init, for timing)",
    )
    parser.add_argument("--sha256", help="expected sha256 of the checkpoint")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument("--preprocess", choices=["pad", "crop"], default=None)


def require_model(args: argparse.Namespace, *, warn_random: bool = False) -> None:
    """Refuse a command line that names no model; with ``warn_random``, say on stderr that a
    model without ``--checkpoint`` has random weights."""
    if not args.arch and not args.checkpoint:
        raise ValueError("give --arch, --checkpoint, or both")
    if warn_random and not args.checkpoint:
        print(f"hps: no --checkpoint: {args.arch} has random weights", file=sys.stderr)
