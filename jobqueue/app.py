"""The Celery app, configured from Settings, for workers and for clients alike."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu import Queue

from config import Settings
from jobqueue.names import DEFAULT_QUEUE, GPU_QUEUE, LONGEST_HARD_LIMIT_S, TASK_KINDS

# A message not acknowledged within this time is handed to another worker. It must exceed the
# longest hard time limit, or a long training run would start a second time while running.
DEFAULT_VISIBILITY_TIMEOUT_S = LONGEST_HARD_LIMIT_S + 900


def transport_options(broker_url: str, visibility_timeout_s: int) -> dict[str, int]:
    """Redelivery settings where the transport has them (Redis); the embedded SQLAlchemy
    transport takes none (it hands every option to ``create_engine``)."""
    if not broker_url.startswith(("redis", "rediss")):
        return {}
    return {
        "visibility_timeout": visibility_timeout_s,
        # Look for unacknowledged messages of dead workers often enough to matter.
        "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 4)),
        "unacked_restore_throttle": 1,
    }


def make_celery(settings: Settings, *, include: Sequence[str] = ()) -> Celery:
    """A Celery app on ``settings.broker_url`` with the platform's reliability settings."""
    visibility = settings.task_visibility_timeout_s or DEFAULT_VISIBILITY_TIMEOUT_S
    app = Celery("hps", broker=settings.broker_url, include=list(include))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the jobs table and the outbox
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=False,
        task_default_queue=DEFAULT_QUEUE,
        task_queues=[Queue(GPU_QUEUE), Queue(DEFAULT_QUEUE)],
        task_routes={kind.task_name: {"queue": kind.queue} for kind in TASK_KINDS.values()},
        task_annotations={
            kind.task_name: {
                "soft_time_limit": kind.soft_time_limit_s,
                "time_limit": kind.hard_time_limit_s,
            }
            for kind in TASK_KINDS.values()
        },
        broker_transport_options=transport_options(settings.broker_url, visibility),
        broker_connection_retry_on_startup=True,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app
