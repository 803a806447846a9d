"""The outbox: results waiting to be posted to Discord, delivered exactly once.

A worker inserts a row and ``NOTIFY``s in the same transaction (PostgreSQL delivers the
notification only on commit, so the bot never sees an uncommitted row). The bot ``LISTEN``s on
:data:`OUTBOX_CHANNEL` and also polls, claims rows with ``FOR UPDATE SKIP LOCKED`` and stamps
``delivered_at`` after posting.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from db.models import OutboxMessage, utcnow
from db.upsert import insert_for, is_postgresql

OUTBOX_CHANNEL = "hps_outbox"


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
    kind: str,
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
        kind=kind,
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


def claim_pending_outbox(session: Session, limit: int = 20) -> list[OutboxMessage]:
    """Lock up to ``limit`` undelivered rows, oldest first, skipping rows another deliverer
    holds. Deliver them and call :func:`mark_outbox_delivered` in the same transaction."""
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.delivered_at.is_(None))
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    if is_postgresql(session):
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def mark_outbox_delivered(session: Session, outbox_id: int) -> None:
    """Stamp a row as delivered."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == outbox_id)
        .values(delivered_at=utcnow(), attempts=OutboxMessage.attempts + 1, last_error=None)
    )


def record_outbox_failure(session: Session, outbox_id: int, error: str) -> None:
    """Count a failed delivery attempt (the row stays pending for a retry)."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == outbox_id)
        .values(attempts=OutboxMessage.attempts + 1, last_error=error[:2000])
    )
