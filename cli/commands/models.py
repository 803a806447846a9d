"""``hps models list | inspect | fetch | fetch-defaults``: architectures and checkpoints.

``hps models fetch NAME`` takes a catalogue entry (:mod:`hps.catalogue`) from the Hugging Face
Hub into ``--cache-dir`` (default ``MODELS_DIR/hf``, the models volume), hashes and checks
every weight file, records it in ``MODELS_DIR/catalogue/NAME.json`` and, for a scorer
(kind ``hps``), registers it as a model version (``--activate``: the active one, global or
``--guild``'s). A pipeline is named by ``SD_PIPELINE=NAME`` / ``hps adapt --pipeline NAME``.
An https URL instead of a name downloads one file (:func:`hps.fetch.fetch`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.output import print_json

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from hps.catalogue import CatalogueEntry
    from hps.fetch import FetchedEntry

# `hps models fetch-defaults` (the compose `models` service): comma-separated fetch arguments.
DEFAULTS_ENV = "HPS_FETCH_MODELS"
DEFAULT_FETCHES = "hps-v2.1 --activate,sd-1.5"
HF_CACHE_FOLDER = "hf"  # MODELS_DIR/hf: the Hugging Face cache of fetched entries


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps models`` to the ``hps`` parser."""
    models = subcommands.add_parser("models", help="architectures and checkpoints")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="registered architectures and the catalogue")
    listing.set_defaults(handler=cmd_models_list)
    inspect = actions.add_parser("inspect", help="describe a checkpoint file")
    inspect.add_argument("path")
    inspect.set_defaults(handler=cmd_models_inspect)
    fetch = actions.add_parser(
        "fetch", help="download a catalogue entry (or an https URL), verify and register it"
    )
    add_fetch_arguments(fetch)
    fetch.set_defaults(handler=cmd_models_fetch)
    defaults = actions.add_parser(
        "fetch-defaults",
        help=f"fetch each comma-separated item of ${DEFAULTS_ENV} (default {DEFAULT_FETCHES!r})",
    )
    defaults.add_argument("items", nargs="*", help="fetch argument lists (default: the env)")
    defaults.set_defaults(handler=cmd_models_fetch_defaults)


def add_fetch_arguments(fetch: argparse.ArgumentParser) -> None:
    """The arguments of ``hps models fetch``."""
    fetch.add_argument("name", help="a catalogue name (see list) or an https URL")
    fetch.add_argument(
        "--activate", action="store_true", help="make the fetched scorer the active one"
    )
    fetch.add_argument(
        "--guild", type=int, help="register (and activate) for this guild (default: global)"
    )
    fetch.add_argument(
        "--cache-dir", help="Hugging Face cache to use (default: MODELS_DIR/hf, the models volume)"
    )
    fetch.add_argument("--out", help="URL only: target file (default: ./models/<file name>)")
    fetch.add_argument(
        "--sha256", help="URL only: expected sha256 of the download (a mismatch keeps nothing)"
    )
    fetch.add_argument(
        "--max-gib", type=float, default=16.0, help="URL only: refuse larger downloads (GiB)"
    )


def entry_view(entry: CatalogueEntry) -> dict[str, Any]:
    """A catalogue entry as ``hps models list`` prints it."""
    revision = entry.revision if entry.pinned else f"{entry.revision} (UNPINNED)"
    return {
        "kind": entry.kind,
        "source": f"{entry.repo}@{revision}" if entry.repo else "not on the Hub",
        "pinned": entry.pinned,
        "files": list(entry.files),
        "size_bytes": entry.size_bytes,
        "architecture": entry.architecture,
        "description": entry.description,
        "note": entry.note,
    }


def cmd_models_list(_args: argparse.Namespace) -> int:
    """Print the registered architectures and the catalogue of published weights."""
    from hps.architectures import get_architecture, list_architectures
    from hps.catalogue import load_catalogue

    print_json(
        {
            "architectures": {
                name: get_architecture(name).description for name in list_architectures()
            },
            "catalogue": {name: entry_view(e) for name, e in load_catalogue().items()},
        }
    )
    return 0


def cmd_models_inspect(args: argparse.Namespace) -> int:
    """Describe a checkpoint file: hash, architecture, size, dtypes, metadata."""
    from hps.checkpoints import load_checkpoint, resolve_checkpoint, sha256_of_file
    from hps.factory import infer_architecture

    path = resolve_checkpoint(Path(args.path))
    state, metadata = load_checkpoint(path)
    architecture = metadata.get("architecture") or infer_architecture(state).name
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    print_json(
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


def cmd_models_fetch(args: argparse.Namespace) -> int:
    """Fetch a catalogue entry (see the module's docstring) or download an https URL."""
    from hps.catalogue import load_catalogue

    entry = load_catalogue().get(args.name)
    if entry is None:
        if args.name.startswith("https://"):
            return fetch_url(args)
        raise ValueError(
            f"{args.name!r} is neither a published name nor an https URL "
            "(hps models list shows the catalogue)"
        )
    print_json(fetch_catalogue_entry(entry, args))
    return 0


def fetch_catalogue_entry(entry: CatalogueEntry, args: argparse.Namespace) -> dict[str, Any]:
    """Fetch, verify, record and (scorers) register ``entry``; what was done, as JSON."""
    from config import get_settings
    from hps.fetch import DownloadRefused, fetch_entry, write_record

    if entry.repo is None:
        raise DownloadRefused(f"{entry.name} cannot be fetched from the Hub: {entry.note}")
    if entry.kind != "hps" and (args.activate or args.guild is not None):
        hint = f"; set SD_PIPELINE={entry.name}" if entry.kind == "pipeline" else ""
        raise ValueError(
            f"{entry.name} is a {entry.kind}, not a scorer: --activate and --guild "
            f"apply to scorers only{hint}"
        )
    models_dir = get_settings().models_dir
    assert models_dir is not None
    cache_dir = models_dir / HF_CACHE_FOLDER
    if args.cache_dir:
        cache_dir = Path(args.cache_dir).expanduser()
    fetched = fetch_entry(entry, cache_dir.resolve())
    view: dict[str, Any] = {
        "name": entry.name,
        "kind": entry.kind,
        "repo": entry.repo,
        "revision": entry.revision,
        "pinned": entry.pinned,
        "commit": fetched.commit,
        "folder": str(fetched.folder),
        "files": {
            f.name: {"sha256": f.sha256, "bytes": f.size, "checked_against": f.checked_against}
            for f in fetched.files
        },
        "record": str(write_record(models_dir, fetched)),
    }
    if entry.kind == "hps":
        view["model_version"] = register_fetched(fetched, models_dir, args.guild, args.activate)
    elif entry.kind == "pipeline":
        view["use"] = f"SD_PIPELINE={entry.name} (or hps adapt --pipeline {entry.name})"
    return view


def register_fetched(
    fetched: FetchedEntry, models_dir: Path, guild_id: int | None, activate: bool
) -> dict[str, Any]:
    """Register a fetched scorer as a model version of kind ``hps`` (the same name, file and
    guild registered before is reused), activating it if asked; the version as JSON."""
    from cli.commands.registry import version_view
    from cli.resources import open_resources
    from db.engine import run_transaction
    from db.models import ModelKind
    from db.registry import list_model_versions, promote_model_version, register_model_version

    entry = fetched.entry
    architecture = entry.architecture
    assert entry.checkpoint is not None and architecture is not None
    weight = fetched.weight(entry.checkpoint)
    key = (
        str(weight.path.relative_to(models_dir))
        if weight.path.is_relative_to(models_dir)
        else str(weight.path)
    )

    def register(session: Session) -> dict[str, Any]:
        same = [
            v
            for v in list_model_versions(session, ModelKind.hps)
            if (v.name, v.checkpoint_sha256, v.guild_id, v.architecture)
            == (entry.name, weight.sha256, guild_id, architecture)
        ]
        version = same[0] if same else None
        if version is None:
            version = register_model_version(
                session,
                kind=ModelKind.hps,
                name=entry.name,
                checkpoint_key=key,
                architecture=architecture,
                checkpoint_sha256=weight.sha256,
                guild_id=guild_id,
                trained_on={"published": f"{entry.repo}@{fetched.commit}"},
            )
        if activate:
            version = promote_model_version(session, version.id)
        return version_view(version)

    with open_resources() as resources:
        result: dict[str, Any] = run_transaction(resources.factory, register)
    return result


def cmd_models_fetch_defaults(args: argparse.Namespace) -> int:
    """Fetch every item of ``$HPS_FETCH_MODELS`` (or the arguments): the compose ``models``
    service's first-run download. Stops at the first failure."""
    from hps.catalogue import get_entry

    items = args.items or os.environ.get(DEFAULTS_ENV, DEFAULT_FETCHES).split(",")
    parser = argparse.ArgumentParser(prog="hps models fetch")
    add_fetch_arguments(parser)
    # Every item is checked before anything downloads: a typo fails at once.
    fetches = [parser.parse_args(shlex.split(item)) for item in items if item.strip()]
    entries = [get_entry(fetch_args.name) for fetch_args in fetches]
    done = []
    for entry, fetch_args in zip(entries, fetches, strict=True):
        print(f"hps models fetch {entry.name}", file=sys.stderr)
        done.append(fetch_catalogue_entry(entry, fetch_args))
    print_json(done)
    return 0


def fetch_url(args: argparse.Namespace) -> int:
    """Download one https URL to ``--out`` (checked against ``--sha256``), with a sidecar."""
    from tqdm import tqdm

    from hps.fetch import fetch

    url = args.name
    target = Path(args.out) if args.out else Path("models") / url.rsplit("/", 1)[-1]
    with tqdm(unit="B", unit_scale=True, desc=target.name, file=sys.stderr) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        fetched = fetch(
            url,
            target,
            sha256=args.sha256,
            on_progress=progress,
            max_bytes=int(args.max_gib * 1024**3),
        )
    print_json(
        {
            "path": str(fetched.path),
            "sha256": fetched.sha256,
            "bytes": fetched.size,
            "sha256_file": str(fetched.sidecar),
            "pinned": bool(args.sha256),
        }
    )
    return 0
