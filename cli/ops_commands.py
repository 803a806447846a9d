"""``hps stats``: what the community collected (consent applied), as JSON or as charts."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from config import get_settings


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add the operations subcommands to the ``hps`` parser."""
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
    from db.engine import make_engine, make_session_factory
    from db.models import utcnow
    from db.scope import Scope
    from db.stats import collect_stats, row_counts

    if days < 0 or top < 1 or bins < 2:
        raise ValueError("--days must be >= 0, --top >= 1 and --bins >= 2")
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        now = utcnow()
        since = now - timedelta(days=days) if days else None
        with make_session_factory(engine)() as session, session.begin():
            counts = row_counts(session)
            scope = Scope.guild(guild_id) if guild_id is not None else Scope.pooled()
            report = collect_stats(session, scope, since=since, top=top, bins=bins, now=now)
    finally:
        engine.dispose()
    return {"counts": counts, "report": report}


def cmd_stats(args: argparse.Namespace) -> int:
    found = gather(args.days, args.top, args.bins, args.guild)
    report = found["report"]
    if args.out is None:
        print(json.dumps({**found["counts"], **report.to_dict()}, indent=2, ensure_ascii=False))
        return 0
    try:
        import matplotlib  # noqa: F401  (the ml extra)
    except ImportError as exc:
        raise ValueError(f"charts need matplotlib (pip install -e '.[ml]'): {exc}") from None
    from worker.stats_charts import render_charts, summary_text

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(
        json.dumps({**found["counts"], **report.to_dict()}, indent=2, ensure_ascii=False) + "\n"
    )
    written = [out / "stats.json"]
    for chart in render_charts(report):
        (out / chart.filename).write_bytes(chart.png)
        written.append(out / chart.filename)
    print(summary_text(report).replace("**", ""))
    print()
    for path in written:
        print(f"wrote {path}")
    return 0
