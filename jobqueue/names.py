"""Task names, their queues and their time limits: the contract between clients and workers."""

from __future__ import annotations

from dataclasses import dataclass

GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class TaskKind:
    """One kind of job: the Celery task that runs it, where, and for how long at most."""

    kind: str
    task_name: str
    queue: str
    soft_time_limit_s: int
    hard_time_limit_s: int


TASK_KINDS = {
    kind.kind: kind
    for kind in (
        TaskKind("score", "hps.score_images", GPU_QUEUE, 120, 180),
        TaskKind("rank", "hps.rank_generation", GPU_QUEUE, 300, 360),
        TaskKind("score_unscored", "hps.score_unscored", GPU_QUEUE, 6 * 3600, 6 * 3600 + 300),
        TaskKind("train", "hps.train", GPU_QUEUE, 12 * 3600, 12 * 3600 + 600),
        TaskKind("generate", "hps.generate", GPU_QUEUE, 600, 720),
        TaskKind("regenerate", "hps.regenerate", GPU_QUEUE, 600, 720),
        TaskKind("duel", "hps.duel", GPU_QUEUE, 600, 720),
        TaskKind("adapt", "hps.adapt", GPU_QUEUE, 24 * 3600, 24 * 3600 + 600),
        TaskKind("export", "hps.export_dataset", DEFAULT_QUEUE, 6 * 3600, 6 * 3600 + 300),
        TaskKind("stats", "hps.stats_report", DEFAULT_QUEUE, 300, 360),
        TaskKind("leaderboard", "hps.arena_leaderboard", DEFAULT_QUEUE, 300, 360),
    )
}

LONGEST_HARD_LIMIT_S = max(kind.hard_time_limit_s for kind in TASK_KINDS.values())


class UnknownJobKind(ValueError):
    """No task runs jobs of this kind."""


def task_kind(kind: str) -> TaskKind:
    """The TaskKind for a job kind; raise UnknownJobKind naming the known ones."""
    try:
        return TASK_KINDS[kind]
    except KeyError:
        raise UnknownJobKind(
            f"unknown job kind {kind!r}; known: {', '.join(sorted(TASK_KINDS))}"
        ) from None
