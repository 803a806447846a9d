"""``hps score``: score images against a prompt (JSON out)."""

from __future__ import annotations

import argparse

from cli.model_options import add_model_arguments, require_model
from cli.output import print_json


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps score`` to the ``hps`` parser."""
    score = subcommands.add_parser("score", help="score images against a prompt (JSON out)")
    add_model_arguments(score)
    score.add_argument("--prompt", required=True, help="the prompt the images were made for")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("images", nargs="+", metavar="IMAGE")
    score.set_defaults(handler=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    """Print each image's HPS for the prompt."""
    from hps.scoring import build_scorer

    require_model(args, warn_random=True)
    scorer = build_scorer(
        args.arch,
        args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        preprocess=args.preprocess,
        sha256=args.sha256,
    )
    scores = scorer.score(args.prompt, args.images, batch_size=args.batch_size)
    print_json(
        [
            {"image": image, "score": round(s, 4)}
            for image, s in zip(args.images, scores, strict=True)
        ]
    )
    return 0
