"""Create a job row, then enqueue its task by name with the job id as the Celery task id."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db.engine import run_transaction
from db.jobs import UserJobLimits, create_job, fail_job
from jobqueue.names import task_kind


class EnqueueError(ConnectionError):
    """The job row exists but the broker refused the message; the job is marked failed."""


def submit_job(
    app: Celery,
    factory: sessionmaker[Session],
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    requested_by: int | None = None,
    guild_id: int | None = None,
    channel_id: int | None = None,
    interaction_token: str | None = None,
    interaction_expires_at: datetime | None = None,
    limits: UserJobLimits | None = None,
) -> uuid.UUID:
    """Record a queued job and send its task; return the job id (= Celery task id).

    With ``limits`` the requester's limits are checked atomically with the insert
    (db.errors.JobLimitReached when reached; nothing is queued then)."""
    spec = task_kind(kind)

    def create(session: Session) -> uuid.UUID:
        job = create_job(
            session,
            kind,
            params or {},
            requested_by=requested_by,
            guild_id=guild_id,
            channel_id=channel_id,
            interaction_token=interaction_token,
            interaction_expires_at=interaction_expires_at,
            limits=limits,
        )
        return job.id

    job_id = run_transaction(factory, create)
    try:
        app.send_task(spec.task_name, args=[str(job_id)], task_id=str(job_id), queue=spec.queue)
    except Exception as exc:
        message = "the job queue is unavailable; try again later"
        detail = f"{message} ({type(exc).__name__}: {exc})"
        run_transaction(
            factory,
            lambda session: fail_job(session, job_id, detail, user_message=message),
        )
        raise EnqueueError(message) from exc
    return job_id
