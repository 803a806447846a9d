"""``hps train``: fine-tune an HPS model on preference data: a manifest (``--data``), or the
product's database (``--from-db``: the choice sets of the operators' pooled scope or of one
``--guild``, consent applied, split by prompt; arena duel votes included unless
``--no-duel-votes``)."""

from __future__ import annotations

import argparse
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.model_options import require_model
from cli.output import print_json

if TYPE_CHECKING:
    from hps.training.manifests import PreferenceSet
    from hps.training.trainer import TrainConfig


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps train`` to the ``hps`` parser."""
    train = subcommands.add_parser("train", help="fine-tune an HPS model on preference data")
    train.add_argument("--arch", help="architecture (see `hps models list`)")
    start = train.add_mutually_exclusive_group()
    start.add_argument(
        "--checkpoint",
        help="starting weights: a checkpoint file or an `hps train --out` folder "
        "(default: random init)",
    )
    start.add_argument(
        "--base",
        help="start from a fetched catalogue entry (`hps models fetch NAME` first; offline "
        "after that), e.g. openai-vit-l-14 for the paper's recipe; --arch defaults to its",
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="training manifest")
    source.add_argument(
        "--from-db",
        action="store_true",
        help="train on the database's choices (train split; the validation split is "
        "evaluated at the end unless --val-data is given)",
    )
    train.add_argument("--val-data", help="held-out manifest evaluated at the end")
    _register_database_options(train)
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


def _register_database_options(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--guild", type=int, help="with --from-db: this guild's data (default: the pooled scope)"
    )
    train.add_argument(
        "--cutoff",
        type=_aware_time,
        help="with --from-db: choices made (duels closed) up to this ISO time (default: now)",
    )
    train.add_argument(
        "--no-duel-votes",
        action="store_true",
        help="with --from-db: leave arena duel votes out (default: they are pairwise sets)",
    )


def _aware_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def database_sets(
    args: argparse.Namespace,
) -> tuple[list[PreferenceSet], list[PreferenceSet], dict[str, Any]]:
    """(train sets, validation sets, what they are) from the database's choice sets of the
    scope (``--guild`` or pooled) up to ``--cutoff``, duel votes unless ``--no-duel-votes``;
    images as local files (remote stores cached under ``--out``). ValueError when there is
    nothing to train on."""
    from cli.resources import open_resources
    from db.datasets import ChoiceSet, iter_choice_sets
    from db.engine import run_transaction
    from db.scope import Scope
    from hps.training.manifests import PreferenceSet, one_hot
    from worker.snapshot import local_image_path

    scope = Scope.of_job(args.guild)
    cutoff = args.cutoff or datetime.now(UTC)
    duel_votes = not args.no_duel_votes
    with open_resources() as resources:
        salt = resources.settings.split_salt

        def collect(session: Any) -> list[ChoiceSet]:
            sets = iter_choice_sets(
                session, scope=scope, salt=salt, cutoff=cutoff, duel_votes=duel_votes
            )
            return [s for s in sets if s.split in ("train", "validation")]

        chosen = run_transaction(resources.factory, collect)
        cache = Path(args.out) / "image-cache"
        by_split: dict[str, list[PreferenceSet]] = {"train": [], "validation": []}
        digest = hashlib.sha256()
        for choice in chosen:
            paths = tuple(
                local_image_path(resources.store, sha, cache) for sha in choice.image_sha256s
            )
            target = one_hot(choice.chosen_index, len(paths))
            by_split[choice.split].append(
                PreferenceSet(choice.prompt, paths, target, split=choice.split)
            )
            digest.update(f"{choice.key}:{choice.chosen_index};".encode())
    if not by_split["train"]:
        raise ValueError(f"no training choices in the database for {scope.describe()}")
    described = {
        "database": True,
        "scope": scope.describe(),
        "cutoff": cutoff.isoformat(),
        "salt": salt,
        "duel_votes": duel_votes,
        "train_sets": len(by_split["train"]),
        "validation_sets": len(by_split["validation"]),
        "duel_vote_sets": sum(1 for c in chosen if c.source == "duel_vote"),
        "choices_digest": digest.hexdigest(),
    }
    return by_split["train"], by_split["validation"], described


def _manifest_sets(
    args: argparse.Namespace,
) -> tuple[list[PreferenceSet], list[PreferenceSet] | None, dict[str, Any]]:
    from hps.checkpoints import sha256_of_file
    from hps.training.manifests import load_manifest

    sets = load_manifest(args.data, args.image_root)
    trained_on = {
        "manifest": str(Path(args.data).resolve()),
        "manifest_sha256": sha256_of_file(Path(args.data)),
        "sets": len(sets),
    }
    return sets, None, trained_on


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


def _resolve_base(args: argparse.Namespace) -> str:
    """``--base NAME``: the fetched entry's checkpoint (sha256 verified) becomes
    ``--checkpoint`` and its architecture the default ``--arch``; returns its sha256."""
    from config import get_settings
    from hps.fetch import fetched_checkpoint

    models_dir = get_settings().models_dir
    assert models_dir is not None  # Settings fills it in
    path, sha256, architecture = fetched_checkpoint(models_dir, args.base)
    args.checkpoint = str(path)
    args.arch = args.arch or architecture
    return sha256


def cmd_train(args: argparse.Namespace) -> int:
    """Train; rank 0 prints where the checkpoint, metrics and curve are."""
    from hps.checkpoints import resolve_checkpoint
    from hps.training.manifests import load_manifest
    from hps.training.trainer import train

    base_sha256 = _resolve_base(args) if args.base else None
    require_model(args)
    if not args.from_db and (args.guild is not None or args.cutoff or args.no_duel_votes):
        raise ValueError("--guild, --cutoff and --no-duel-votes go with --from-db")
    sets, held_out, trained_on = database_sets(args) if args.from_db else _manifest_sets(args)
    val_sets = load_manifest(args.val_data, args.image_root) if args.val_data else held_out or None
    # The file itself, not its folder: the new model records (and hashes) what it started from.
    start = resolve_checkpoint(args.checkpoint) if args.checkpoint else None
    if base_sha256 is not None:
        trained_on = {**(trained_on or {}), "base": args.base, "base_sha256": base_sha256}
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
