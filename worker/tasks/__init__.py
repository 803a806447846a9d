"""The body of each job kind, by kind (``jobqueue.names.TASK_KINDS``). Bodies are imported on
first use, inside the task: the worker's parent process loads no torch before it forks."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.lifecycle import JobContext, JobOutcome

    JobBody = Callable[[JobContext[Any]], JobOutcome]

# kind -> "module:function"
TASK_BODIES = {
    "score": "worker.tasks.scoring:score_uploaded",
    "rank": "worker.tasks.scoring:rank_generation",
    "score_unscored": "worker.tasks.scoring:score_all_unscored",
    "train": "worker.tasks.training:train_candidate",
    "generate": "worker.tasks.generation:generate_images",
    "regenerate": "worker.tasks.generation:regenerate",
    "duel": "worker.tasks.arena:generate_duel",
    "adapt": "worker.tasks.adaptation:adapt",
    "export": "worker.tasks.export:export_dataset",
    "stats": "worker.tasks.stats:stats_report",
    "leaderboard": "worker.tasks.leaderboard:arena_leaderboard",
}


def job_body(kind: str) -> JobBody:
    """The function that runs a ``kind`` job (imported now)."""
    module, name = TASK_BODIES[kind].split(":")
    body: JobBody = getattr(import_module(module), name)
    return body
