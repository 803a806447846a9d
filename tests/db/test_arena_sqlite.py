"""db.arena on SQLite (the embedded deployment): the bot's path through aiosqlite (votes from
several members at once, the delivery loop's sweep with the real clock), deadlines compared
as instants whatever the offset of ``now`` (SQLite stores text), and the sweep's oldest-first
limit. tests/db/test_arena.py runs the domain rules on both backends; these are the parts
where SQLite differs: stored text timestamps, RETURNING, a LIMIT inside IN, BEGIN IMMEDIATE
writers queueing on the busy timeout."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta, timezone
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from db.arena import (
    CloseReason,
    Tally,
    VoteOutcome,
    close_due_duels,
    get_duel,
    record_vote,
    tally,
)
from db.engine import make_async_engine, make_async_session_factory, run_transaction_async
from db.models import DuelStatus, utcnow
from db.privacy import opt_out
from tests.arena_factories import make_duel, register_lora

GUILD = 4242
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _open_duel(session: Session, opened_at: datetime, open_seconds: int, lora: int) -> int:
    duel = make_duel(
        session,
        guild_id=GUILD,
        configurations=(lora, None),
        opened_at=opened_at,
        channel_id=9,
        open_seconds=open_seconds,
        requested_by=500,
        rng=random.Random(1),
    )
    return duel.id


def _lora(session: Session) -> int:
    return register_lora(session, "sqlite-lora", guild_id=GUILD, checkpoint_key="lora/sqlite")


async def test_votes_and_the_sweep_through_aiosqlite_with_the_real_clock(
    sqlite_url: str, sqlite_factory: sessionmaker[Session]
) -> None:
    with sqlite_factory() as session, session.begin():
        duel_id = _open_duel(session, utcnow(), 3600, _lora(session))
        opt_out(session, 66)
    engine = make_async_engine(sqlite_url)
    factory = make_async_session_factory(engine)

    async def vote(user: int, kind: str, *, bot: bool = False) -> VoteOutcome:
        work = partial(record_vote, duel_id=duel_id, user_id=user, vote=kind, voter_is_bot=bot)
        return await run_transaction_async(factory, lambda s: work(s).outcome)

    try:
        # Ten members click at once: every writer queues on BEGIN IMMEDIATE, none is lost.
        outcomes = await asyncio.gather(*(vote(100 + n, "ab"[n % 2]) for n in range(10)))
        assert outcomes == [VoteOutcome.recorded] * 10
        assert await vote(100, "a") == VoteOutcome.unchanged
        assert await vote(101, "tie") == VoteOutcome.changed
        assert await vote(66, "a") == VoteOutcome.opted_out
        assert await vote(7, "a", bot=True) == VoteOutcome.bot
        assert await run_transaction_async(factory, partial(tally, duel_id=duel_id)) == Tally(
            a=5, b=4, tie=1
        )
        assert await run_transaction_async(factory, close_due_duels) == []  # not due yet

        with sqlite_factory() as session, session.begin():
            get_duel(session, duel_id).closes_at = utcnow() - timedelta(milliseconds=1)
        [closed] = await run_transaction_async(factory, close_due_duels)
        assert closed.duel_id == duel_id and closed.reason == CloseReason.time
        assert closed.tally == Tally(a=5, b=4, tie=1) and closed.message_id is not None
        assert await run_transaction_async(factory, close_due_duels) == []  # once
        assert await vote(102, "b") == VoteOutcome.closed
        assert await vote(100, "b") == VoteOutcome.closed
        with sqlite_factory() as session:
            duel = get_duel(session, duel_id)
            assert duel.status == DuelStatus.closed and duel.closed_at is not None
            assert duel.closed_at.tzinfo is not None and duel.closed_at <= utcnow()
            assert tally(session, duel_id) == Tally(a=5, b=4, tie=1)
    finally:
        await engine.dispose()


def test_deadlines_are_instants_whatever_the_offset_of_now(
    sqlite_factory: sessionmaker[Session],
) -> None:
    with sqlite_factory() as session, session.begin():
        lora = _lora(session)
        due = _open_duel(session, T0, 600, lora)  # closes at 12:10:00 UTC
        later = _open_duel(session, T0 + timedelta(microseconds=1), 600, lora)
    india = timezone(timedelta(hours=5, minutes=30))
    deadline = (T0 + timedelta(seconds=600)).astimezone(india)  # 17:40 in +05:30
    assert str(deadline).startswith("2026-12-01 17:40:00")  # as text: 5.5 hours late
    with sqlite_factory() as session, session.begin():
        before = deadline - timedelta(microseconds=1)
        assert record_vote(session, later, 1, "a", now=before).outcome == VoteOutcome.recorded
        assert close_due_duels(session, before) == []
    with sqlite_factory() as session, session.begin():
        assert [c.duel_id for c in close_due_duels(session, deadline)] == [due]  # <= deadline
        result = record_vote(session, later, 2, "b", now=deadline + timedelta(microseconds=1))
        assert result.outcome == VoteOutcome.closed and result.closed is not None
        assert result.closed.duel_id == later and result.closed.tally == Tally(a=1)
    with sqlite_factory() as session:
        assert get_duel(session, later).closed_at == T0 + timedelta(seconds=600, microseconds=1)


def test_the_sweep_closes_the_oldest_deadlines_first_within_its_limit(
    sqlite_factory: sessionmaker[Session],
) -> None:
    with sqlite_factory() as session, session.begin():
        lora = _lora(session)
        duels = [_open_duel(session, T0, seconds, lora) for seconds in (300, 60, 200, 100, 900)]
    now = T0 + timedelta(seconds=400)
    with sqlite_factory() as session, session.begin():
        first = close_due_duels(session, now, limit=2)
    assert [c.duel_id for c in first] == sorted([duels[1], duels[3]])  # deadlines 60 s, 100 s
    with sqlite_factory() as session, session.begin():
        rest = close_due_duels(session, now, limit=2)
        assert close_due_duels(session, now) == []
    assert [c.duel_id for c in rest] == sorted([duels[2], duels[0]])  # 200 s, 300 s
    with sqlite_factory() as session:
        assert get_duel(session, duels[4]).status == DuelStatus.open  # 900 s: not due
