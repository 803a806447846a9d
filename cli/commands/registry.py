"""``hps registry add | list | promote``: model versions (hps | lora)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.resources import print_transaction
from config import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from db.models import ModelKind, ModelVersion


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps registry`` to the ``hps`` parser."""
    registry = subcommands.add_parser("registry", help="model versions (hps | lora)")
    actions = registry.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    _register_add(actions)
    listing = actions.add_parser(
        "list", help="all versions (global and every guild's), newest first"
    )
    listing.set_defaults(handler=cmd_registry_list)
    promote = actions.add_parser("promote", help="make a version the active one")
    promote.add_argument("version_id", type=int)
    promote.set_defaults(handler=cmd_registry_promote)


def _register_add(actions: argparse._SubParsersAction) -> None:
    add = actions.add_parser("add", help="register a checkpoint as a model version")
    add.add_argument("--kind", choices=["hps", "lora"], default="hps")
    add.add_argument("--name", required=True)
    add.add_argument("--arch", required=True)
    add.add_argument(
        "--checkpoint",
        required=True,
        help="path (inside MODELS_DIR or absolute): a file or an `hps train --out` folder "
        "for hps, a folder for lora",
    )
    add.add_argument(
        "--sha256",
        help="expected sha256 of the checkpoint (default: its .sha256 sidecar, if any); "
        "the file's own sha256 is registered and verified on every load",
    )
    add.add_argument(
        "--guild", type=int, help="the guild this version belongs to (default: global)"
    )
    add.add_argument(
        "--activate", action="store_true", help="make it the active one (of its guild, or global)"
    )
    add.set_defaults(handler=cmd_registry_add)


def version_view(version: ModelVersion) -> dict[str, Any]:
    """A model version as printed by the CLI."""
    return {
        "id": version.id,
        "kind": version.kind.value,
        "guild_id": version.guild_id,
        "name": version.name,
        "architecture": version.architecture,
        "status": version.status.value,
        "checkpoint_key": version.checkpoint_key,
        "checkpoint_sha256": version.checkpoint_sha256,
        "metrics": version.metrics,
        "created_at": version.created_at.isoformat(),
    }


def checkpoint_sha256(path: Path, kind: ModelKind, pinned: str | None) -> tuple[str, str]:
    """The sha256 to register for ``path`` and what it was checked against.

    The file's own sha256 is always computed (and is what gets registered); it must equal
    ``--sha256`` when given, else the ``<file>.sha256`` sidecar that ``hps models fetch``
    wrote, when there is one. A LoRA is a folder: its weights file is what is hashed."""
    from db.models import ModelKind
    from hps.checkpoints import LORA_WEIGHTS_FILE, normalize_sha256, read_sidecar, sha256_of_file

    if kind == ModelKind.lora:
        if not path.is_dir():
            raise FileNotFoundError(f"no LoRA folder at {path}")
        hashed = path / LORA_WEIGHTS_FILE
    else:
        hashed = path
    if not hashed.is_file():
        raise FileNotFoundError(f"no checkpoint at {hashed}")
    actual = sha256_of_file(hashed)
    expected: str | None = normalize_sha256(pinned) if pinned else read_sidecar(hashed)
    source = "--sha256" if pinned else f"{hashed.name}.sha256"
    if expected is None:
        return actual, "nothing (no --sha256, no sidecar): computed from the file"
    if expected != actual:
        raise ValueError(
            f"{hashed}: sha256 is {actual}, but {source} says {expected}; not registered"
        )
    return actual, source


def cmd_registry_add(args: argparse.Namespace) -> int:
    """Register a checkpoint (hashed and checked) as a model version; optionally activate it."""
    from db.models import ModelKind
    from db.registry import promote_model_version, register_model_version
    from hps.checkpoints import resolve_checkpoint

    settings = get_settings()
    assert settings.models_dir is not None
    kind = ModelKind(args.kind)
    path = Path(args.checkpoint).expanduser().resolve()
    if kind == ModelKind.hps:
        path = resolve_checkpoint(path)  # a training output folder: the model file in it
    digest, digest_from = checkpoint_sha256(path, kind, args.sha256)
    key = (
        str(path.relative_to(settings.models_dir))
        if path.is_relative_to(settings.models_dir)
        else str(path)
    )

    def add(session: Session) -> dict[str, Any]:
        version = register_model_version(
            session,
            kind=kind,
            name=args.name,
            checkpoint_key=key,
            architecture=args.arch,
            checkpoint_sha256=digest,
            guild_id=args.guild,
        )
        if args.activate:
            promote_model_version(session, version.id)
        return {**version_view(version), "sha256_checked_against": digest_from}

    return print_transaction(add, settings)


def cmd_registry_promote(args: argparse.Namespace) -> int:
    """Make a version the active one (of its guild, or global); print it."""
    from db.registry import promote_model_version

    return print_transaction(lambda s: version_view(promote_model_version(s, args.version_id)))


def cmd_registry_list(_args: argparse.Namespace) -> int:
    """Print every model version, newest first."""
    from db.registry import list_model_versions

    return print_transaction(lambda s: [version_view(v) for v in list_model_versions(s)])
