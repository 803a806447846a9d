"""The Celery app of the workers, with one task per job kind (``jobqueue.names.TASK_KINDS``),
each running its kind's body (``worker.tasks.TASK_BODIES``) through ``run_job``.

Start a worker with ``hps worker`` (see its --help): one process per GPU, pinned with
CUDA_VISIBLE_DEVICES, ``-P solo`` or prefork with one child; torch loads lazily inside tasks,
never in the parent before a fork.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.signals import worker_process_init
from sqlalchemy.exc import DBAPIError

import worker.metrics  # noqa: F401  (Celery signal receivers: Prometheus metrics, logging)
from config import get_settings
from jobqueue.app import make_celery
from jobqueue.names import TASK_KINDS, TaskKind
from worker.lifecycle import run_job
from worker.runtime import reset_runtime
from worker.tasks import TASK_BODIES, job_body

app = make_celery(get_settings())

RETRY = {
    "autoretry_for": (DBAPIError, ConnectionError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}


@worker_process_init.connect
def _fresh_process(**_kwargs: Any) -> None:
    reset_runtime()


def register(kind: TaskKind) -> Task:
    """The Celery task of one job kind, under its task name."""

    def task(job_id: str) -> str:
        return run_job(job_id, job_body(kind.kind))

    task.__name__ = task.__qualname__ = kind.kind
    task.__doc__ = f"Run a {kind.kind} job ({TASK_BODIES[kind.kind]})."
    registered: Task = app.task(name=kind.task_name, **RETRY)(task)
    return registered


TASKS = {name: register(kind) for name, kind in TASK_KINDS.items()}
