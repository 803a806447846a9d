"""``hps stats``: what the community collected (consent applied), as JSON or as charts."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.resources import open_resources

if TYPE_CHECKING:
    from db.stats import StatsReport


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps stats`` to the ``hps`` parser."""
    stats = subcommands.add_parser(
        "stats",
        help="statistics of the harvested data (JSON; --out DIR: charts + summary)",
        description="Table row counts (top level of the JSON) and statistics of the harvested "
        "data: choices per day, images per generator, score distributions, agreement between "
        "users, top prompts (these exclude opted-out users and their generations). Prints JSON; "
        "with --out, writes PNG charts and stats.json to DIR and prints a short summary.",
    )
    stats.add_argument("--out", type=Path, help="folder for the PNG charts and stats.json")
    stats.add_argument(
        "--days", type=int, default=90, help="days covered by the time series (0: all time)"
    )
    stats.add_argument("--top", type=int, default=10, help="number of top prompts")
    stats.add_argument("--bins", type=int, default=20, help="score histogram bins")
    stats.add_argument(
        "--guild",
        type=int,
        help="one guild's statistics (default: the guilds that pool their data)",
    )
    stats.set_defaults(handler=cmd_stats)


def gather(days: int, top: int, bins: int, guild_id: int | None = None) -> dict[str, Any]:
    """Row counts (whole tables, as ``hps stats`` always printed them) plus the statistics
    report of one guild, or of the guilds that pool their data."""
    from db.models import utcnow
    from db.scope import Scope
    from db.stats import collect_stats, row_counts

    if days < 0 or top < 1 or bins < 2:
        raise ValueError("--days must be >= 0, --top >= 1 and --bins >= 2")
    with open_resources() as resources:
        now = utcnow()
        since = now - timedelta(days=days) if days else None
        with resources.factory() as session, session.begin():
            counts = row_counts(session)
            scope = Scope.guild(guild_id) if guild_id is not None else Scope.pooled()
            report = collect_stats(session, scope, since=since, top=top, bins=bins, now=now)
    return {"counts": counts, "report": report}


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the statistics as JSON, or write charts and stats.json to ``--out``."""
    found = gather(args.days, args.top, args.bins, args.guild)
    document = {**found["counts"], **found["report"].to_dict()}
    if args.out is None:
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    try:
        import matplotlib  # noqa: F401  (the ml extra)
    except ImportError as exc:
        raise ValueError(f"charts need matplotlib (pip install -e '.[ml]'): {exc}") from None
    written = write_charts(args.out, document, found["report"])
    from worker.stats_charts import summary_text

    print(summary_text(found["report"]).replace("**", ""))
    print()
    for path in written:
        print(f"wrote {path}")
    return 0


def write_charts(out: Path, document: dict[str, Any], report: StatsReport) -> list[Path]:
    """Write stats.json and one PNG per chart into ``out``; the files written, in order."""
    from worker.stats_charts import render_charts

    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    written = [out / "stats.json"]
    for chart in render_charts(report):
        (out / chart.filename).write_bytes(chart.png)
        written.append(out / chart.filename)
    return written
