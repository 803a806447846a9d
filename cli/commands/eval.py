"""``hps eval``: accuracy on held-out preference data, beside the untuned baseline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cli.model_options import add_model_arguments, require_model
from cli.output import print_json

if TYPE_CHECKING:
    from hps.factory import LoadedModel


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps eval`` to the ``hps`` parser."""
    evaluate = subcommands.add_parser("eval", help="accuracy on held-out preference data")
    add_model_arguments(evaluate)
    evaluate.add_argument("--data", required=True, help="held-out manifest")
    evaluate.add_argument("--image-root")
    evaluate.add_argument("--baseline-checkpoint", help="the untuned model it started from")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--report", help="folder for evaluation.json + evaluation.md")
    evaluate.set_defaults(handler=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate the model and its baseline on the manifest; print (and write) the comparison."""
    from hps.evaluation import Comparison, evaluate, write_report
    from hps.factory import load_model
    from hps.scoring import HpsScorer
    from hps.training.manifests import load_manifest

    require_model(args)
    sets = load_manifest(args.data, args.image_root)
    loaded = load_model(args.arch, args.checkpoint, sha256=args.sha256)
    baseline, baseline_name = load_baseline(args, loaded)
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
    print_json(comparison.as_dict())
    return 0


def load_baseline(args: argparse.Namespace, loaded: LoadedModel) -> tuple[LoadedModel, str]:
    """The untuned model the evaluated one started from, and its name."""
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
