"""The stats job (``/hps admin stats``, ``hps jobs submit stats``): what the community
collected, as a short summary and charts posted in Discord.

Parameters (``jobqueue.contracts.StatsParams``): ``days`` (the time series cover this many
days, default 90; 0 = all time), ``top`` (prompts listed, default 10), ``bins`` (score
histogram bins, default 20). Charts are stored in the blob store and listed in the outbox
payload by the bot's generic contract: ``{"text": summary, "files": [{"sha256", "filename"},
...]}``.
"""

from __future__ import annotations

from datetime import timedelta

from db.models import utcnow
from db.stats import collect_stats
from jobqueue.contracts import OutboxKind, Post, PostedFile, StatsParams, StatsResult
from worker.lifecycle import JobContext, JobOutcome

MAX_FILES = 10  # Discord's limit per message


def stats_report(context: JobContext[StatsParams]) -> JobOutcome:
    """Query the statistics, draw the charts, store them, and describe them for the bot."""
    params = context.params
    now = utcnow()
    since = now - timedelta(days=params.days) if params.days else None
    context.progress(0.05, "counting", force=True)
    report = context.transaction(
        lambda session: collect_stats(
            session, context.scope, since=since, top=params.top, bins=params.bins, now=now
        )
    )
    context.progress(0.5, "drawing charts", force=True)
    from worker.stats_charts import render_charts, summary_text

    text = summary_text(report)
    store = context.runtime.store
    files = [
        PostedFile(sha256=store.put(chart.png), filename=chart.filename)
        for chart in render_charts(report)[:MAX_FILES]
    ]
    return JobOutcome(
        result=StatsResult(text=text, files=files, stats=report.to_dict()),
        outbox_kind=OutboxKind.stats_result,
        outbox_payload=Post(text=text, files=files),
    )
