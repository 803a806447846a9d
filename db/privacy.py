"""Consent and deletion: opt out / in, forget a user, delete what a deleted message held.

Deleting rows and deleting blobs happen in two steps: the row deletions run in the caller's
transaction and return the sha256s that no remaining image references; the caller purges
those blobs only after the commit (:func:`purge_orphan_blobs`), so a rollback never leaves
rows pointing at missing files.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import (
    Choice,
    DiscordUser,
    Duel,
    Generation,
    Image,
    Job,
    OutboxMessage,
    utcnow,
)
from db.upsert import insert_for
from media.store import ImageStore


def _set_consent(session: Session, user_id: int, *, opted_out: bool) -> None:
    now = utcnow()
    state = {
        "opted_out": opted_out,
        "opted_out_at": now if opted_out else None,
        "opted_in_at": None if opted_out else now,
    }
    stmt = insert_for(session, DiscordUser).values(id=user_id, created_at=now, **state)
    session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=state))


def opt_out(session: Session, user_id: int) -> None:
    """Mark a user as opted out: from now on nothing of theirs is stored. Existing data is
    kept until they ask to be forgotten (:func:`forget_user`)."""
    _set_consent(session, user_id, opted_out=True)


def opt_in(session: Session, user_id: int) -> None:
    """Record explicit consent (needed in opt-in guilds; lifts an earlier opt-out)."""
    _set_consent(session, user_id, opted_out=False)


def is_opted_out(session: Session, user_id: int) -> bool:
    """Whether the user opted out."""
    return bool(session.scalar(select(DiscordUser.opted_out).where(DiscordUser.id == user_id)))


def _shas_of_generations(session: Session, condition: object) -> set[str]:
    return set(
        session.scalars(
            select(Image.sha256)
            .join(Generation, Image.generation_id == Generation.id)
            .where(
                condition  # type: ignore[arg-type]
            )
        )
    )


def _shas_of_duels(session: Session, requested_by: int) -> set[str]:
    rows = session.execute(
        select(Duel.image_a_sha256, Duel.image_b_sha256).where(Duel.requested_by == requested_by)
    )
    return {sha for row in rows for sha in row if sha is not None}


def _still_used(session: Session, candidates: set[str]) -> set[str]:
    """The candidates an image row or an arena duel still references."""
    used = set(session.scalars(select(Image.sha256).where(Image.sha256.in_(candidates))))
    for column in (Duel.image_a_sha256, Duel.image_b_sha256):
        rows = session.scalars(select(column).where(column.in_(candidates)))
        used |= {sha for sha in rows if sha is not None}
    return used


def _unreferenced(session: Session, shas: Iterable[str]) -> list[str]:
    candidates = set(shas)
    if not candidates:
        return []
    return sorted(candidates - _still_used(session, candidates))


def forget_user(session: Session, user_id: int, *, keep_opt_out: bool = False) -> list[str]:
    """Delete every row of a user: their generations (with images, choices and scores on
    them), the arena duels they asked for (with their votes), their choices elsewhere, their
    jobs and the outbox rows of those jobs, and the user row itself. Return the sha256s of
    blobs that no remaining row references.

    With ``keep_opt_out`` a bare opted-out marker (id only) is left so that harvesting does
    not start again; without it the user leaves no row at all.
    """
    shas = _shas_of_generations(session, Generation.requester_id == user_id)
    shas |= _shas_of_duels(session, user_id)
    session.execute(delete(Duel).where(Duel.requested_by == user_id))
    session.execute(delete(Generation).where(Generation.requester_id == user_id))
    session.execute(delete(Choice).where(Choice.user_id == user_id))
    job_ids = select(Job.id).where(Job.requested_by == user_id)
    session.execute(delete(OutboxMessage).where(OutboxMessage.job_id.in_(job_ids)))
    session.execute(delete(Job).where(Job.requested_by == user_id))
    session.execute(delete(DiscordUser).where(DiscordUser.id == user_id))
    if keep_opt_out:
        opt_out(session, user_id)
    return _unreferenced(session, shas)


def delete_by_message_ids(session: Session, message_ids: Iterable[int]) -> list[str]:
    """Delete what deleted Discord messages held: generations posted in them (with images,
    choices, scores) and choices made by them (an upscale message). Return orphaned sha256s."""
    ids = list(message_ids)
    if not ids:
        return []
    shas = _shas_of_generations(session, Generation.source_message_id.in_(ids))
    session.execute(delete(Generation).where(Generation.source_message_id.in_(ids)))
    session.execute(delete(Choice).where(Choice.source_message_id.in_(ids)))
    return _unreferenced(session, shas)


def blob_in_use(session: Session, sha256: str) -> bool:
    """Whether any image row or arena duel still references the blob."""
    return bool(_still_used(session, {sha256}))


def purge_orphan_blobs(
    factory: sessionmaker[Session], store: ImageStore, shas: Iterable[str]
) -> int:
    """After the deleting transaction committed: remove blobs still unreferenced now
    (re-checked, in case the same bytes were ingested again meanwhile). Return the count."""
    removed = 0
    for sha in shas:
        with factory() as session:
            if blob_in_use(session, sha):
                continue
        removed += int(store.delete(sha))
    return removed


def forget_user_everywhere(
    factory: sessionmaker[Session], store: ImageStore, user_id: int, *, keep_opt_out: bool = False
) -> int:
    """``/hps privacy forget-me``: delete the rows in one transaction, then the blobs.
    Return the number of blobs removed."""
    with factory() as session, session.begin():
        orphans = forget_user(session, user_id, keep_opt_out=keep_opt_out)
    return purge_orphan_blobs(factory, store, orphans)
