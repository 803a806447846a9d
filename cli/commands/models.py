"""``hps models list | inspect | fetch``: architectures and checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.output import print_json


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps models`` to the ``hps`` parser."""
    models = subcommands.add_parser("models", help="architectures and checkpoints")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="registered architectures and published checkpoints")
    listing.set_defaults(handler=cmd_models_list)
    inspect = actions.add_parser("inspect", help="describe a checkpoint file")
    inspect.add_argument("path")
    inspect.set_defaults(handler=cmd_models_inspect)
    fetch = actions.add_parser("fetch", help="download a published checkpoint (explicit)")
    fetch.add_argument("name", help="a published name (see list) or an https URL")
    fetch.add_argument("--out", help="target file (default: ./models/<file name>)")
    fetch.add_argument(
        "--sha256", help="expected sha256 of the download (a mismatch keeps nothing)"
    )
    fetch.add_argument(
        "--max-gib", type=float, default=16.0, help="refuse downloads larger than this (GiB)"
    )
    fetch.set_defaults(handler=cmd_models_fetch)


def cmd_models_list(_args: argparse.Namespace) -> int:
    """Print the registered architectures and the published checkpoints."""
    from hps.architectures import get_architecture, list_architectures
    from hps.fetch import PUBLISHED

    print_json(
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
    """Download a published checkpoint (or an https URL), checked against its sha256."""
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
    print_json(
        {
            "path": str(fetched.path),
            "sha256": fetched.sha256,
            "bytes": fetched.size,
            "sha256_file": str(fetched.sidecar),
            "pinned": bool(sha256),
        }
    )
    return 0
