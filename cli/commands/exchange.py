"""``hps export`` and ``hps import``: dataset exchange in the Pick-a-Pic and HPD formats."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.resources import open_resources
from config import Settings, get_settings

if TYPE_CHECKING:
    from exchange.export import ExportOptions


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps export`` and ``hps import`` to the ``hps`` parser."""
    _register_export(subcommands)
    _register_import(subcommands)


def _register_export(subcommands: argparse._SubParsersAction) -> None:
    export = subcommands.add_parser(
        "export",
        help="export the choices as Pick-a-Pic parquet + HPD JSON with a dataset card",
        description="Export every choice of users who have not opted out (split by prompt) "
        "into a folder: data/<split>-*.parquet (Pick-a-Pic), hpd/ (HPD v1/v2 JSON + images), "
        "README.md (dataset card) and histogram.png.",
    )
    export.add_argument(
        "--out", type=Path, help="export folder (default EXPORTS_DIR/export-<time>)"
    )
    export.add_argument(
        "--format",
        default="pickapic,hpd",
        help="comma-separated: pickapic, hpd (default both)",
    )
    export.add_argument("--license", default=None, help="licence id for the card (cc-by-4.0)")
    export.add_argument("--name", default=None, help="dataset name for the card")
    export.add_argument("--until", help="only choices made up to this ISO time (default now)")
    export.add_argument("--guild", type=int, help="only the generations of this guild id")
    export.add_argument("--rows-per-shard", type=int, default=None, help="parquet rows per file")
    export.add_argument("--jpeg-quality", type=int, default=None, help="JPEG quality (95)")
    export.add_argument("--force", action="store_true", help="replace an existing --out folder")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")
    export.set_defaults(handler=cmd_export)


def _register_import(subcommands: argparse._SubParsersAction) -> None:
    imp = subcommands.add_parser(
        "import",
        help="import HPD v1/v2 JSON or Pick-a-Pic parquet into the database",
        description="Import preference data: prompts, generations, images (through the safe "
        "intake) and choices. Idempotent: importing a file again adds nothing. A folder "
        "written by 'hps export' imports its parquet shards.",
    )
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument("--format", choices=["auto", "pickapic", "hpd"], default="auto")
    imp.add_argument(
        "--namespace",
        help="name of the source in imported ids (default: the format); files imported under "
        "the same namespace share users and generations",
    )
    imp.add_argument("--image-root", type=Path, help="folder HPD image paths are relative to")
    imp.add_argument(
        "--skip-invalid", action="store_true", help="skip bad records and list them (not stop)"
    )
    imp.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.set_defaults(handler=cmd_import)


def progress_bar(
    enabled: bool, unit: str
) -> tuple[Callable[[int, int, str], None], Callable[[], None]]:
    """A tqdm bar behind the exchange progress callback; a new bar when the file changes."""
    from tqdm import tqdm

    state: dict[str, Any] = {"bar": None, "label": None}

    def update(done: int, total: int, message: str) -> None:
        if not enabled:
            return
        label = message.split(":", 1)[0] if unit == "record" else "export"
        bar = state["bar"]
        if bar is None or state["label"] != label:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(total=total, unit=unit, desc=label, disable=None)
            state["label"] = label
        bar.total = total
        bar.n = done
        bar.refresh()

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return update, close


def export_options(args: argparse.Namespace, settings: Settings) -> ExportOptions:
    """The export's options from the command line and the settings."""
    from exchange.card import DEFAULT_LICENSE
    from exchange.export import ExportOptions
    from exchange.ids import resolve_user_salt

    cutoff = None
    if args.until:
        cutoff = datetime.fromisoformat(args.until)
        cutoff = cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=UTC)
    secret = settings.export_user_salt.get_secret_value() if settings.export_user_salt else None
    options = ExportOptions(
        split_salt=settings.split_salt,
        user_salt=resolve_user_salt(secret, settings.hps_data_dir),
        formats=tuple(f.strip() for f in args.format.split(",") if f.strip()),
        license=args.license or DEFAULT_LICENSE,
        cutoff=cutoff,
        guild_id=args.guild,
    )
    if args.name:
        options.name = args.name
    if args.rows_per_shard:
        options.rows_per_shard = args.rows_per_shard
    if args.jpeg_quality:
        if not 1 <= args.jpeg_quality <= 100:
            raise ValueError("--jpeg-quality must be between 1 and 100")
        options.jpeg_quality = args.jpeg_quality
    return options


def cmd_export(args: argparse.Namespace) -> int:
    """Export the choices into a folder; print the summary."""
    from exchange.export import export_dataset

    settings = get_settings()
    assert settings.exports_dir is not None
    options = export_options(args, settings)
    out = args.out or settings.exports_dir / f"export-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    progress, close = progress_bar(not args.no_progress, "choice")
    with open_resources(settings) as resources:
        try:
            summary = export_dataset(
                resources.factory,
                resources.store,
                Path(out),
                options,
                progress=progress,
                overwrite=args.force,
            )
        finally:
            close()
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; an export folder stands for its parquet shards (or HPD v1 files)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted((path / "data").glob("*.parquet")) or sorted(
                (path / "hpd").glob("v1_*.json")
            )
            if not found:
                raise FileNotFoundError(f"{path}: no data/*.parquet or hpd/v1_*.json inside")
            files += found
        else:
            files.append(path)
    return files


def cmd_import(args: argparse.Namespace) -> int:
    """Import preference data files; print the summary."""
    # pyarrow's allocator (mimalloc) keeps freed pages ~10 ms before it returns them; with
    # image cells of tens of MB that shows in the peak (bench/import_memory.py, 1 GB of 20 MB
    # cells: 371 instead of 411 MiB, same speed). Read when pyarrow is loaded, not before.
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
    from exchange.importer import ImportOptions, import_files

    settings = get_settings()
    options = ImportOptions(
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        fmt=args.format,
        namespace=args.namespace,
        image_root=args.image_root,
        skip_invalid=args.skip_invalid,
        dry_run=args.dry_run,
    )
    files = expand_paths(args.paths)
    progress, close = progress_bar(not args.no_progress, "record")
    with open_resources(settings) as resources:
        try:
            summary = import_files(
                resources.factory, resources.store, files, options, progress=progress
            )
        finally:
            close()
    print(json.dumps(summary.as_dict(), indent=2))
    return 0
