"""Jobs: background work requested from Discord or the CLI, tracked through its life.

The job id doubles as the Celery task id. Finishing or failing a job writes its outcome and
an outbox row (NOTIFY included) in one transaction; both are idempotent, so a task that is
redelivered after a worker died produces one result and one message. A job recorded whose
task was never sent (its client died in between: ``sent_at`` still NULL) is claimed by one
sender, later, with :func:`unsent_jobs`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import null, select, text, update
from sqlalchemy.orm import Session

from db.errors import JobLimitReached, JobNotFound, JobStateError
from db.models import TERMINAL_JOB_STATUSES, Job, JobStatus, utcnow
from db.outbox import OutboxKind, write_outbox
from db.upsert import is_postgresql

MAX_ERROR_CHARS = 2000
# A job recorded this long ago and still not sent is an orphan: its client died between
# recording and sending it (the bot spends one Discord follow-up in between, at most seconds).
ORPHAN_AFTER = timedelta(minutes=5)
UNSENT_BATCH = 50  # orphans claimed at most per call of unsent_jobs
# Namespace of the per-user advisory locks (the other int of the two-key form is the user).
USER_JOBS_LOCK_CLASS = 0x4850


@dataclass(frozen=True)
class UserJobLimits:
    """How many jobs one user may start per minute and have open (queued or running)."""

    per_minute: int
    max_open: int


def create_job(
    session: Session,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    requested_by: int | None = None,
    guild_id: int | None = None,
    channel_id: int | None = None,
    interaction_token: str | None = None,
    interaction_expires_at: datetime | None = None,
    job_id: uuid.UUID | None = None,
    limits: UserJobLimits | None = None,
) -> Job:
    """Insert a queued job and return it (flushed, so ``job.id`` is set).

    With ``limits`` (and a requester) the user's limits are checked and the job inserted
    atomically: concurrent requests of one user are serialised on a per-user lock held to the
    end of the transaction, so no burst can slip past the limits. The limits count the user's
    jobs in ``guild_id`` only (each community's limits are its own). Raise JobLimitReached."""
    now = utcnow()
    if limits is not None and requested_by is not None:
        lock_user_jobs(session, requested_by)
        check_user_job_limits(session, requested_by, limits, now=now, guild_id=guild_id)
    job = Job(
        id=job_id or uuid.uuid4(),
        kind=kind,
        status=JobStatus.queued,
        params=params or {},
        requested_by=requested_by,
        guild_id=guild_id,
        channel_id=channel_id,
        interaction_token=interaction_token,
        interaction_expires_at=interaction_expires_at,
        progress=0.0,
        progress_message="queued",
        created_at=now,
        updated_at=now,
        sent_at=null(),  # the caller sends it next (mark_job_sent); not the column's default
    )
    session.add(job)
    session.flush()
    return job


def mark_job_sent(session: Session, job_id: uuid.UUID) -> bool:
    """Stamp the job's ``sent_at`` (its task was handed to the broker), unless stamped
    already; whether this call stamped it."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.sent_at.is_(None))
        .values(sent_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True)
class UnsentJob:
    """A job recorded but never sent to a worker, claimed for sending by :func:`unsent_jobs`."""

    id: uuid.UUID
    kind: str
    created_at: datetime


def unsent_jobs(
    session: Session,
    older_than: timedelta = ORPHAN_AFTER,
    *,
    now: datetime | None = None,
    limit: int = UNSENT_BATCH,
) -> list[UnsentJob]:
    """Claim the orphans, oldest first: jobs still queued (no cancel asked), never sent
    (``sent_at`` NULL) and recorded more than ``older_than`` ago. The caller sends each one
    (jobqueue.submit.enqueue_job stamps ``sent_at``).

    A claim is a conditional update that moves ``updated_at`` to ``now``, of rows locked with
    SKIP LOCKED on PostgreSQL: two concurrent claimers never get the same job. It is a lease,
    not a mark: a claimer that dies before sending leaves the job to be claimed again
    ``older_than`` later. (A scheduled duel's job re-sent by db.arena_gate.stale_duel_jobs
    moves ``updated_at`` too, so the two never send one job in the same moment.)"""
    now = now or utcnow()
    cutoff = now - older_than
    due = (
        Job.status == JobStatus.queued,
        Job.cancel_requested.is_(False),
        Job.sent_at.is_(None),
        Job.created_at < cutoff,
        Job.updated_at < cutoff,
    )
    ids = session.scalars(
        select(Job.id)
        .where(*due)
        .order_by(Job.created_at, Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not ids:
        return []
    claimed = session.execute(
        update(Job)
        .where(Job.id.in_(ids), *due)
        .values(updated_at=now)
        .returning(Job.id, Job.kind, Job.created_at)
        .execution_options(synchronize_session=False)
    ).all()
    jobs = [UnsentJob(job_id, kind, created_at) for job_id, kind, created_at in claimed]
    return sorted(jobs, key=lambda job: (job.created_at, str(job.id)))


def get_job(session: Session, job_id: uuid.UUID, *, lock: bool = False) -> Job:
    """Load a job (optionally ``FOR UPDATE``); raise JobNotFound."""
    query = select(Job).where(Job.id == job_id)
    if lock:
        query = query.with_for_update()
    job = session.scalar(query)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


def lock_unfinished_job(session: Session, job_id: uuid.UUID) -> Job | None:
    """The job, locked to the end of the transaction, unless it already finished (None): the
    writes that finish a job run only while this holds."""
    job = get_job(session, job_id, lock=True)
    return None if job.status in TERMINAL_JOB_STATUSES else job


def start_job(session: Session, job_id: uuid.UUID) -> Job:
    """Mark a job running (again, after a redelivery). Raise JobStateError if it already
    finished or was cancelled, so the task can return without redoing work."""
    job = get_job(session, job_id, lock=True)
    if job.status in TERMINAL_JOB_STATUSES:
        raise JobStateError(f"job {job_id} is already {job.status.value}")
    if job.cancel_requested:
        _close(job, JobStatus.cancelled, error="cancelled before it started")
        raise JobStateError(f"job {job_id} was cancelled")
    now = utcnow()
    job.status = JobStatus.running
    job.started_at = job.started_at or now
    job.attempts += 1
    job.updated_at = now
    job.progress_message = "running"
    return job


def update_job_progress(session: Session, job_id: uuid.UUID, fraction: float, message: str) -> bool:
    """Record progress (0..1 and a short message). Return False when a cancel was requested,
    so long tasks can stop at their next checkpoint."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running)
        .values(progress=fraction, progress_message=message[:500], updated_at=utcnow())
    )
    return not bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def _close(job: Job, status: JobStatus, *, error: str | None = None) -> None:
    now = utcnow()
    job.status = status
    job.finished_at = now
    job.updated_at = now
    job.error = error[:MAX_ERROR_CHARS] if error else None
    if status == JobStatus.succeeded:
        job.progress = 1.0
    job.progress_message = status.value


def finish_job(
    session: Session,
    job_id: uuid.UUID,
    result: dict[str, Any],
    *,
    outbox_kind: OutboxKind | None = None,
    outbox_payload: dict[str, Any] | None = None,
) -> bool:
    """Store the result, mark the job succeeded and queue its outbox message, atomically.
    Return False (and change nothing) if the job had already finished."""
    job = get_job(session, job_id, lock=True)
    if job.status in TERMINAL_JOB_STATUSES:
        return False
    job.result = result
    _close(job, JobStatus.succeeded)
    write_outbox(
        session,
        outbox_kind or f"{job.kind}_result",
        _outbox_payload(job, outbox_payload if outbox_payload is not None else result),
        channel_id=job.channel_id,
        guild_id=job.guild_id,
        job_id=job.id,
        dedupe_key=f"job:{job.id}:done",
    )
    return True


def fail_job(
    session: Session, job_id: uuid.UUID, error: str, *, user_message: str | None = None
) -> bool:
    """Mark a job failed and tell its requester via the outbox. ``error`` (the detail: paths,
    exception text) stays in the job row for admins; the user is told ``user_message`` (a
    short reason; ``error`` itself when not given). Return False if it had already finished."""
    job = get_job(session, job_id, lock=True)
    if job.status in TERMINAL_JOB_STATUSES:
        return False
    _close(job, JobStatus.failed, error=error)
    reason = (user_message or error)[:MAX_ERROR_CHARS]
    write_outbox(
        session,
        OutboxKind.job_failed,
        _outbox_payload(job, {"error": reason}),
        channel_id=job.channel_id,
        guild_id=job.guild_id,
        job_id=job.id,
        dedupe_key=f"job:{job.id}:done",
    )
    return True


def request_cancel(session: Session, job_id: uuid.UUID) -> Job:
    """Ask a job to stop. A queued job is cancelled at once; a running one stops at its next
    progress checkpoint."""
    job = get_job(session, job_id, lock=True)
    if job.status in TERMINAL_JOB_STATUSES:
        return job
    job.cancel_requested = True
    if job.status == JobStatus.queued:
        _close(job, JobStatus.cancelled, error="cancelled")
    return job


def mark_cancelled(session: Session, job_id: uuid.UUID) -> None:
    """Close a running job that stopped because a cancel was requested."""
    job = get_job(session, job_id, lock=True)
    if job.status not in TERMINAL_JOB_STATUSES:
        _close(job, JobStatus.cancelled, error="cancelled")


def _outbox_payload(job: Job, body: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"job_id": str(job.id), "job_kind": job.kind, **body}
    if job.requested_by is not None:
        payload["requested_by"] = job.requested_by
    return payload


def job_progress(
    session: Session, job_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[JobStatus, float, str]]:
    """(status, progress, progress message) of each of ``job_ids`` that exists."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(Job.id, Job.status, Job.progress, Job.progress_message).where(Job.id.in_(job_ids))
    )
    return {job_id: (status, progress, message) for job_id, status, progress, message in rows}


def lock_user_jobs(session: Session, user_id: int) -> None:
    """Hold ``user_id``'s job lock to the end of the transaction (PostgreSQL: an advisory
    lock; SQLite transactions are serial already, begun IMMEDIATE)."""
    if is_postgresql(session):
        session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
            {"namespace": USER_JOBS_LOCK_CLASS, "key": user_id % 2_147_483_647},
        )


def check_user_job_limits(
    session: Session,
    user_id: int,
    limits: UserJobLimits,
    *,
    now: datetime | None = None,
    guild_id: int | None = None,
) -> None:
    """Raise JobLimitReached (with a message for the user) if ``user_id`` may not start
    another job in ``guild_id`` now (jobs elsewhere do not count). Alone it is a cheap early
    refusal; :func:`create_job` repeats it under the user's lock, which is what makes the
    limits hold."""
    now = now or utcnow()
    recent, open_jobs = user_job_load(session, user_id, now - timedelta(minutes=1), guild_id)
    if open_jobs >= limits.max_open:
        raise JobLimitReached(
            f"you already have {open_jobs} jobs waiting or running; try again when one has finished"
        )
    if recent >= limits.per_minute:
        raise JobLimitReached(
            f"that is {recent} jobs in the last minute (limit {limits.per_minute}); "
            "try again in a minute"
        )


def user_job_load(
    session: Session, user_id: int, since: datetime, guild_id: int | None = None
) -> tuple[int, int]:
    """How many jobs ``user_id`` started in ``guild_id`` (None: outside any guild) since
    ``since``, and how many are still open (queued or running): what per-user rate and queue
    limits are checked against."""
    from sqlalchemy import case, func, or_

    is_open = Job.status.in_([JobStatus.queued, JobStatus.running])
    recent, open_jobs = session.execute(
        select(
            func.count(case((Job.created_at >= since, 1))),
            func.count(case((is_open, 1))),
        ).where(
            Job.requested_by == user_id,
            Job.guild_id.is_(None) if guild_id is None else Job.guild_id == guild_id,
            or_(Job.created_at >= since, is_open),
        )
    ).one()
    return int(recent), int(open_jobs)
