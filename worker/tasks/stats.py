"""The stats job (``/hps admin stats``, ``hps jobs submit stats``): what the community
collected, as a short summary and charts posted in Discord.

Parameters: ``days`` (the time series cover this many days, default 90; 0 = all time),
``top`` (prompts listed, default 10), ``bins`` (score histogram bins, default 20). Charts are
stored in the blob store and listed in the outbox payload by the bot's generic contract:
``{"text": summary, "files": [{"sha256", "filename"}, ...]}``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from db.models import utcnow
from db.stats import collect_stats
from worker.errors import JobFailure
from worker.lifecycle import JobContext, JobOutcome

MAX_FILES = 10  # Discord's limit per message


def _int_param(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise JobFailure(f"{name} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise JobFailure(f"{name} must be between {low} and {high}, not {number}")
    return number


def stats_report(context: JobContext) -> JobOutcome:
    """Query the statistics, draw the charts, store them, and describe them for the bot."""
    params = context.params
    days = _int_param(params, "days", 90, 0, 36_500)
    top = _int_param(params, "top", 10, 1, 50)
    bins = _int_param(params, "bins", 20, 2, 200)
    now = utcnow()
    since = now - timedelta(days=days) if days else None
    context.progress(0.05, "counting", force=True)
    report = context.transaction(
        lambda session: collect_stats(
            session, context.scope, since=since, top=top, bins=bins, now=now
        )
    )
    context.progress(0.5, "drawing charts", force=True)
    from worker.stats_charts import render_charts, summary_text

    text = summary_text(report)
    store = context.runtime.store
    files = [
        {"sha256": store.put(chart.png), "filename": chart.filename}
        for chart in render_charts(report)[:MAX_FILES]
    ]
    return JobOutcome(
        result={"text": text, "files": files, "stats": report.to_dict()},
        outbox_kind="stats_result",
        outbox_payload={"text": text, "files": files},
    )
