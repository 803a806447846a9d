"""The outbox: results waiting to be posted to Discord, delivered exactly once.

A worker inserts a row and ``NOTIFY``s in the same transaction (PostgreSQL delivers the
notification only on commit, so the bot never sees an uncommitted row). The bot ``LISTEN``s on
:data:`OUTBOX_CHANNEL` and also polls, claims due rows with ``FOR UPDATE SKIP LOCKED`` and
stamps ``delivered_at`` after posting.

Delivery cannot jam: claiming a row counts an attempt and leases it (``next_attempt_at`` moves
:data:`CLAIM_LEASE_S` ahead, so no other deliverer takes it while it is being posted, and a
deliverer that died mid-post leaves it to be retried after the lease). A failure that may pass
(Discord 5xx, 429, network) reschedules the row with exponential backoff
(:func:`backoff_delay`); one that cannot (Discord refused the message, a file is gone), or the
:data:`MAX_ATTEMPTS`-th failure, makes the row a dead letter: ``dead_at`` stamped, the reason in
``last_error``, never claimed again unless an operator requeues it
(:func:`requeue_dead_letter`). Rows are claimed by ``next_attempt_at, id``, so a row backing off
never holds up the rows behind it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from db.errors import DomainError
from db.models import OutboxMessage, utcnow
from db.upsert import insert_for, is_postgresql

OUTBOX_CHANNEL = "hps_outbox"


class OutboxKind(StrEnum):
    """What an outbox row posts: one job kind's result, or a job's failure. The worker writes
    these, the bot renders by them."""

    score_result = "score_result"
    rank_result = "rank_result"
    score_unscored_result = "score_unscored_result"
    train_report = "train_report"
    generate_result = "generate_result"
    regenerate_result = "regenerate_result"
    adapt_report = "adapt_report"
    export_result = "export_result"
    stats_result = "stats_result"
    duel_posted = "duel_posted"  # an arena duel: two blinded images and the vote buttons
    duel_reveal = "duel_reveal"  # edits a closed duel's message: the sides and the tally
    leaderboard_result = "leaderboard_result"  # the arena's ratings: a chart and a table
    gate_decision = "gate_decision"  # the arena's verdict on a gated LoRA candidate
    job_failed = "job_failed"


# Waits of 5, 10, 20 ... 320 s, then 600 s: the 10th failed attempt, about 30 minutes after the
# first, makes a row dead, so a Discord outage of that length loses nothing.
MAX_ATTEMPTS = 10
BACKOFF_BASE_S = 5.0  # wait after the first failure; doubles with every further one
BACKOFF_CAP_S = 600.0  # never wait longer than this between two attempts
BACKOFF_JITTER = 0.1  # +-10%, so rows that failed together do not retry together
CLAIM_LEASE_S = 300.0  # a claimed row is not due again for this long (posting takes less)
ERROR_CHARS = 2000


class OutboxRowNotDead(DomainError):
    code = "outbox_row_not_dead"

    def __init__(self, outbox_id: int) -> None:
        super().__init__(f"outbox row {outbox_id} is not a dead letter")
        self.outbox_id = outbox_id


@dataclass(frozen=True)
class FailureOutcome:
    """What :func:`record_outbox_failure` did with a row."""

    attempts: int
    dead: bool
    retry_at: datetime | None  # when it is due again (None when dead or already settled)


def notify_outbox(session: Session, outbox_id: int) -> None:
    """Queue a NOTIFY for ``outbox_id``; PostgreSQL sends it when the transaction commits.
    (SQLite has no NOTIFY: the bot's polling fallback picks the row up.)"""
    if is_postgresql(session):
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": OUTBOX_CHANNEL, "payload": str(outbox_id)},
        )


def write_outbox(
    session: Session,
    kind: OutboxKind | str,
    payload: dict[str, Any],
    *,
    channel_id: int | None = None,
    guild_id: int | None = None,
    job_id: uuid.UUID | None = None,
    dedupe_key: str | None = None,
) -> int | None:
    """Insert an outbox row and NOTIFY, inside the caller's transaction.

    With a ``dedupe_key`` a second write of the same result (a redelivered task) is a no-op
    and returns None; otherwise the new row's id.
    """
    stmt = insert_for(session, OutboxMessage).values(
        kind=str(kind),
        payload=payload,
        channel_id=channel_id,
        guild_id=guild_id,
        job_id=job_id,
        dedupe_key=dedupe_key,
        created_at=utcnow(),
    )
    if dedupe_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=[OutboxMessage.dedupe_key])
    outbox_id = session.execute(stmt.returning(OutboxMessage.id)).scalar_one_or_none()
    if outbox_id is not None:
        notify_outbox(session, int(outbox_id))
        return int(outbox_id)
    return None


def backoff_delay(
    attempts: int,
    *,
    base_s: float = BACKOFF_BASE_S,
    cap_s: float = BACKOFF_CAP_S,
    jitter: float = BACKOFF_JITTER,
    rand: Callable[[], float] = random.random,
) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt: ``base_s``, then doubling
    (5, 10, 20, 40 ... s), at most ``cap_s``, scaled by a random factor in ``1 +- jitter``."""
    exponent = min(max(attempts, 1) - 1, 32)
    delay = min(base_s * 2.0**exponent, cap_s)
    return timedelta(seconds=delay * (1.0 + jitter * (2.0 * rand() - 1.0)))


def _due(now: datetime) -> Any:
    return (
        OutboxMessage.delivered_at.is_(None),
        OutboxMessage.dead_at.is_(None),
        OutboxMessage.next_attempt_at <= now,
    )


def claim_pending_outbox(
    session: Session,
    limit: int = 20,
    *,
    now: datetime | None = None,
    lease_s: float = CLAIM_LEASE_S,
) -> list[OutboxMessage]:
    """Claim up to ``limit`` due rows (not delivered, not dead, ``next_attempt_at <= now``),
    soonest due first, skipping rows another deliverer holds locked.

    Each claimed row counts an attempt and is leased: its ``next_attempt_at`` moves
    ``lease_s`` ahead, so once this transaction commits no other deliverer claims it while it
    is being posted. Post it, then :func:`mark_outbox_delivered` or
    :func:`record_outbox_failure`; a deliverer that dies in between leaves the row to be
    claimed again when the lease ends."""
    now = now or utcnow()
    query = (
        select(OutboxMessage)
        .where(*_due(now))
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    lease_until = now + timedelta(seconds=lease_s)
    for row in rows:
        row.attempts = (row.attempts or 0) + 1
        row.next_attempt_at = lease_until
    session.flush()
    return rows


def renew_outbox_lease(
    session: Session,
    outbox_id: int,
    attempts: int,
    *,
    now: datetime | None = None,
    lease_s: float = CLAIM_LEASE_S,
) -> bool:
    """Extend the lease of a row this deliverer claimed (its claim made ``attempts`` the
    row's count) before posting it late in a round. False when the row is no longer this
    deliverer's to post: another one claimed it since (the count moved on) or it is settled."""
    now = now or utcnow()
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == outbox_id,
            OutboxMessage.attempts == attempts,
            OutboxMessage.delivered_at.is_(None),
            OutboxMessage.dead_at.is_(None),
        )
        .values(next_attempt_at=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def mark_outbox_delivered(session: Session, outbox_id: int) -> bool:
    """Stamp a claimed row as delivered; False if it already was (or is dead)."""
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == outbox_id,
            OutboxMessage.delivered_at.is_(None),
            OutboxMessage.dead_at.is_(None),
        )
        .values(delivered_at=utcnow(), last_error=None)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def record_outbox_failure(
    session: Session,
    outbox_id: int,
    error: str,
    *,
    permanent: bool = False,
    now: datetime | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    rand: Callable[[], float] = random.random,
) -> FailureOutcome:
    """Record that posting a claimed row failed with ``error`` (kept in ``last_error``).

    A ``permanent`` failure, or the ``max_attempts``-th, makes the row a dead letter
    (``dead_at`` stamped); otherwise it is due again after :func:`backoff_delay`. Only the
    call that kills a row returns ``dead=True``, so its consequences (telling the requester,
    counting it) happen once."""
    now = now or utcnow()
    query = select(OutboxMessage).where(OutboxMessage.id == outbox_id)
    if is_postgresql(session):
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None or row.delivered_at is not None or row.dead_at is not None:
        return FailureOutcome(row.attempts if row else 0, False, None)
    attempts = max(row.attempts or 0, 1)
    row.attempts = attempts
    row.last_error = error[:ERROR_CHARS]
    if permanent or attempts >= max_attempts:
        row.dead_at = now
        session.flush()
        return FailureOutcome(attempts, True, None)
    row.next_attempt_at = now + backoff_delay(attempts, rand=rand)
    session.flush()
    return FailureOutcome(attempts, False, row.next_attempt_at)


def list_dead_letters(session: Session, limit: int = 50) -> list[OutboxMessage]:
    """Dead letters, most recently dead first, with their reason in ``last_error``."""
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.dead_at.is_not(None), OutboxMessage.delivered_at.is_(None))
            .order_by(OutboxMessage.dead_at.desc(), OutboxMessage.id.desc())
            .limit(limit)
        )
    )


def requeue_dead_letter(session: Session, outbox_id: int) -> OutboxMessage:
    """Give a dead letter a fresh start (attempts from zero, due now) and wake the bot; its
    last reason stays in ``last_error`` until it is delivered or fails again. Raises
    :class:`OutboxRowNotDead` for a row that does not exist or is not dead."""
    query = select(OutboxMessage).where(OutboxMessage.id == outbox_id)
    if is_postgresql(session):
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None or row.dead_at is None or row.delivered_at is not None:
        raise OutboxRowNotDead(outbox_id)
    row.dead_at = None
    row.attempts = 0
    row.next_attempt_at = utcnow()
    session.flush()
    notify_outbox(session, row.id)
    return row
