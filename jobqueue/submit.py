"""Create a job row, then enqueue its task by name with the job id as the Celery task id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db.engine import run_transaction
from db.jobs import UserJobLimits, create_job, fail_job
from jobqueue.contracts import JobParams
from jobqueue.names import task_kind


class EnqueueError(ConnectionError):
    """The job row exists but the broker refused the message; the job is marked failed."""


@dataclass(frozen=True)
class JobOrigin:
    """Who asked for a job and where its answer goes: the requester, their guild (None: the
    operators, e.g. the CLI) and channel, and the interaction whose webhook may answer
    while its token is valid."""

    requested_by: int | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    interaction_token: str | None = None
    interaction_expires_at: datetime | None = None


OPERATORS = JobOrigin()  # a job queued with no requester, guild or channel (the CLI)


def submit_job(
    app: Celery,
    factory: sessionmaker[Session],
    params: JobParams,
    origin: JobOrigin = OPERATORS,
    *,
    limits: UserJobLimits | None = None,
) -> uuid.UUID:
    """Record a queued job of ``params``' kind and send its task; return the job id (= Celery
    task id).

    With ``limits`` the requester's limits are checked atomically with the insert
    (db.errors.JobLimitReached when reached; nothing is queued then)."""
    job_id = record_job(factory, params, origin, limits=limits)
    enqueue_job(app, factory, params.kind, job_id)
    return job_id


def record_job(
    factory: sessionmaker[Session],
    params: JobParams,
    origin: JobOrigin = OPERATORS,
    *,
    limits: UserJobLimits | None = None,
) -> uuid.UUID:
    """The first half of :func:`submit_job`: the queued job's row (limits checked), not yet
    sent to a worker. A client that must say something before any result can exist (the bot's
    first follow-up) does so between the halves; :func:`enqueue_job` is the second."""
    task_kind(params.kind)  # an unknown kind fails before anything is written

    def create(session: Session) -> uuid.UUID:
        job = create_job(
            session,
            params.kind,
            params.stored(),
            requested_by=origin.requested_by,
            guild_id=origin.guild_id,
            channel_id=origin.channel_id,
            interaction_token=origin.interaction_token,
            interaction_expires_at=origin.interaction_expires_at,
            limits=limits,
        )
        return job.id

    return run_transaction(factory, create)


def enqueue_job(app: Celery, factory: sessionmaker[Session], kind: str, job_id: uuid.UUID) -> None:
    """Send a recorded job's task; if the broker refuses, fail the job and raise
    EnqueueError."""
    spec = task_kind(kind)
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
