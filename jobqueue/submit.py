"""Create a job row, then enqueue its task by name with the job id as the Celery task id.

A client that dies between the two leaves a job recorded and never sent (an orphan):
:func:`send_unsent_jobs`, called on the bot's timed rounds, sends those later.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import run_transaction
from db.jobs import (
    ORPHAN_AFTER,
    UnsentJob,
    UserJobLimits,
    create_job,
    fail_job,
    mark_job_sent,
    unsent_jobs,
)
from db.models import utcnow
from jobqueue.contracts import JobParams
from jobqueue.names import TASK_KINDS, task_kind

log = logging.getLogger(__name__)


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
    """Send a recorded job's task and stamp the job sent; if the broker refuses, fail the job
    and raise EnqueueError."""
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
    try:
        run_transaction(factory, lambda session: mark_job_sent(session, job_id))
    except SQLAlchemyError as exc:  # the task is on its way: the caller need not know
        log.warning(
            "job %s was sent but not stamped sent (%s); it may be sent again later",
            job_id,
            type(exc).__name__,
        )


@dataclass(frozen=True)
class ResentJob:
    """An orphan :func:`send_unsent_jobs` handled: its id, kind and age, and whether it was
    sent (False: the broker refused it, or no task runs its kind; the job is failed and its
    requester told)."""

    job_id: uuid.UUID
    kind: str
    age: timedelta
    sent: bool


UNKNOWN_KIND_MESSAGE = "this kind of job is no longer run here"


def send_unsent_jobs(
    app: Celery, factory: sessionmaker[Session], older_than: timedelta = ORPHAN_AFTER
) -> list[ResentJob]:
    """Send the jobs recorded more than ``older_than`` ago and never sent (their client died
    between :func:`record_job` and :func:`enqueue_job`): each one is claimed by one caller
    only (db.jobs.unsent_jobs), logged, and sent as :func:`enqueue_job` sends; what became of
    each."""
    claimed = run_transaction(factory, lambda session: unsent_jobs(session, older_than))
    handled = []
    for job in claimed:
        age = utcnow() - job.created_at
        log.warning(
            "job %s (%s) was recorded %.0f s ago and never sent to a worker; sending it now",
            job.id,
            job.kind,
            age.total_seconds(),
        )
        handled.append(ResentJob(job.id, job.kind, age, _send_orphan(app, factory, job)))
    return handled


def _send_orphan(app: Celery, factory: sessionmaker[Session], job: UnsentJob) -> bool:
    """Send one claimed orphan; whether it was sent (else it is failed, its failure posted)."""
    if job.kind not in TASK_KINDS:  # a kind this version no longer runs: never sendable
        detail = f"unknown job kind {job.kind!r}"
        run_transaction(
            factory,
            lambda session: fail_job(session, job.id, detail, user_message=UNKNOWN_KIND_MESSAGE),
        )
        return False
    try:
        enqueue_job(app, factory, job.kind, job.id)
    except EnqueueError:  # enqueue_job failed the job, and its failure is posted
        log.warning("job %s (%s) could not be sent: the job queue refused it", job.id, job.kind)
        return False
    return True
