"""The arena's data layer (db.arena) on PostgreSQL and SQLite: blinded sides, one vote per
user (duplicates, changes), refusals (bots, opted-out users, closed and unposted duels),
closing exactly once under races, consent and forgetting, guild scope, and the arrays the
rating fit takes."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.arena import (
    BASE_MODEL_ID,
    CloseReason,
    DuelImage,
    DuelNotFound,
    DuelStateError,
    InvalidDuel,
    Tally,
    VoteOutcome,
    close_due_duels,
    close_duel,
    create_duel,
    get_duel,
    head_to_head,
    open_duel,
    rating_votes,
    record_vote,
    set_duel_images,
    tally,
)
from db.errors import UserOptedOut
from db.models import ConsentMode, Duel, DuelStatus, DuelVote, GuildConfig, Sharing
from db.privacy import blob_in_use, forget_user, opt_in, opt_out
from db.registry import ModelNotFound
from db.scope import Scope, set_sharing
from tests.arena_factories import make_duel, register_lora

GUILD_A, GUILD_B, GUILD_C = 1001, 2002, 3003
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _duel(
    session: Session,
    guild_id: int,
    configurations: tuple[int | None, int | None],
    *,
    seed: int = 0,
    max_votes: int | None = None,
    requested_by: int | None = 500,
    post: bool = True,
    prompt: str = "a lighthouse at dusk",
) -> int:
    duel = make_duel(
        session,
        guild_id=guild_id,
        configurations=configurations,
        opened_at=T0 if post else None,
        prompt=prompt,
        max_votes=max_votes,
        requested_by=requested_by,
        rng=random.Random(seed),
    )
    return duel.id


def _vote(
    factory: sessionmaker[Session], duel_id: int, user: int, vote: str, **kwargs: object
) -> VoteOutcome:
    with factory() as session, session.begin():
        kwargs.setdefault("now", T0 + timedelta(seconds=1))
        return record_vote(session, duel_id, user, vote, **kwargs).outcome  # type: ignore[arg-type]


def _sides(factory: sessionmaker[Session], duel_id: int) -> tuple[int | None, int | None]:
    with factory() as session:
        duel = get_duel(session, duel_id)
        return duel.version_a_id, duel.version_b_id


# --- creating ------------------------------------------------------------------------------


def test_sides_are_drawn_at_random_and_stored(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "fox-lora", guild_id=GUILD_A)
        duels = [_duel(session, GUILD_A, (None, lora), seed=s, post=False) for s in range(16)]
    orders = {_sides(factory, duel_id) for duel_id in duels}
    assert orders == {(None, lora), (lora, None)}  # both orders occur over 16 seeds
    with factory() as session:
        duel = get_duel(session, duels[0])
        assert duel.status == DuelStatus.pending and duel.message_id is None
        assert duel.requested_by == 500 and duel.generator == "toy"


def test_bad_duels_are_refused_with_clear_errors(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "a-lora", guild_id=GUILD_A)
        theirs = register_lora(session, "b-lora", guild_id=GUILD_B)
        global_lora = register_lora(session, "global-lora", guild_id=None)
        with pytest.raises(InvalidDuel, match="two different configurations"):
            _duel(session, GUILD_A, (lora, lora))
        with pytest.raises(ModelNotFound, match=f"no model version {theirs} in this server"):
            _duel(session, GUILD_A, (lora, theirs))
        with pytest.raises(InvalidDuel, match="stays open"):
            create_duel(
                session,
                guild_id=GUILD_A,
                channel_id=1,
                prompt="p",
                generator="toy",
                configurations=(None, lora),
                open_seconds=0,
            )
        # A guild may duel the global fallback against its own LoRA.
        assert _duel(session, GUILD_A, (global_lora, lora), post=False) > 0
        opt_out(session, 666)
        with pytest.raises(UserOptedOut):
            _duel(session, GUILD_A, (None, lora), requested_by=666)


def test_posting_needs_images_and_is_idempotent(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        duel_id = _duel(session, GUILD_A, (None, lora), post=False)
        with pytest.raises(DuelStateError, match="no images"):
            open_duel(session, duel_id, 123, now=T0)
        set_duel_images(session, duel_id, DuelImage("1" * 64, "k1"), DuelImage("2" * 64, "k2"))
        duel = open_duel(session, duel_id, 123, now=T0)
        assert duel.closes_at == T0 + timedelta(seconds=600)
        assert open_duel(session, duel_id, 123, now=T0 + timedelta(seconds=5)).opened_at == T0
        with pytest.raises(DuelStateError, match="cannot be posted again"):
            open_duel(session, duel_id, 456)
        with pytest.raises(DuelStateError, match="images are fixed"):
            set_duel_images(session, duel_id, DuelImage("3" * 64, "k"), DuelImage("4" * 64, "k"))


# --- voting -------------------------------------------------------------------------------


def test_one_vote_per_user_duplicates_and_changes(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        duel_id = _duel(session, GUILD_A, (None, lora))
    assert _vote(factory, duel_id, 1, "a") == VoteOutcome.recorded
    assert _vote(factory, duel_id, 1, "a") == VoteOutcome.unchanged  # a duplicate click
    assert _vote(factory, duel_id, 2, "tie") == VoteOutcome.recorded
    assert _vote(factory, duel_id, 1, "b") == VoteOutcome.changed
    assert _vote(factory, duel_id, 3, "both_bad") == VoteOutcome.recorded
    with factory() as session:
        assert tally(session, duel_id) == Tally(a=0, b=1, tie=1, both_bad=1)
        assert session.scalar(select(func.count()).select_from(DuelVote)) == 3
    with pytest.raises(ValueError, match="unknown vote 'c'; use one of a, b, tie, both_bad"):
        _vote(factory, duel_id, 4, "c")


def test_refused_votes_write_nothing(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        duel_id = _duel(session, GUILD_A, (None, lora))
        pending = _duel(session, GUILD_A, (None, lora), post=False)
        opt_out(session, 13)
        session.add(GuildConfig(guild_id=GUILD_C, consent_mode=ConsentMode.opt_in))
        global_lora = register_lora(session, "global", guild_id=None)
        opt_in_guild_duel = _duel(session, GUILD_C, (None, global_lora), requested_by=None)
    assert _vote(factory, duel_id, 12, "a", voter_is_bot=True) == VoteOutcome.bot
    assert _vote(factory, duel_id, 13, "a") == VoteOutcome.opted_out
    assert _vote(factory, pending, 14, "a") == VoteOutcome.not_open
    assert _vote(factory, opt_in_guild_duel, 15, "a") == VoteOutcome.consent_required
    with factory() as session, session.begin():
        opt_in(session, 15)
    assert _vote(factory, opt_in_guild_duel, 15, "a") == VoteOutcome.recorded
    with factory() as session, session.begin():
        assert close_duel(session, duel_id, now=T0 + timedelta(seconds=2)) is not None
    assert _vote(factory, duel_id, 16, "a") == VoteOutcome.closed
    with factory() as session:
        voters = set(session.scalars(select(DuelVote.user_id)))
        assert voters == {15}


def test_a_vote_after_the_deadline_closes_the_duel_once(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        duel_id = _duel(session, GUILD_A, (None, lora))
    assert _vote(factory, duel_id, 1, "a") == VoteOutcome.recorded
    late = T0 + timedelta(seconds=600)
    with factory() as session, session.begin():
        result = record_vote(session, duel_id, 2, "b", now=late)
    assert result.outcome == VoteOutcome.closed
    assert result.closed is not None and result.closed.reason == CloseReason.time
    assert result.closed.tally == Tally(a=1)
    with factory() as session, session.begin():
        again = record_vote(session, duel_id, 3, "b", now=late)
    assert again.outcome == VoteOutcome.closed and again.closed is None


def test_max_votes_closes_on_the_last_vote(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        duel_id = _duel(session, GUILD_A, (None, lora), max_votes=2)
    assert _vote(factory, duel_id, 1, "a") == VoteOutcome.recorded
    assert _vote(factory, duel_id, 1, "b") == VoteOutcome.changed  # still one voter
    with factory() as session, session.begin():
        result = record_vote(session, duel_id, 2, "tie", now=T0 + timedelta(seconds=3))
    assert result.outcome == VoteOutcome.recorded
    assert result.closed is not None and result.closed.reason == CloseReason.votes
    assert result.closed.tally == Tally(b=1, tie=1)
    assert _vote(factory, duel_id, 3, "a") == VoteOutcome.closed


# --- closing --------------------------------------------------------------------------------


def test_close_exactly_once_with_two_sessions_racing(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        duel_id = _duel(session, GUILD_A, (None, lora))
    first = factory()
    first.begin()
    assert close_duel(first, duel_id, now=T0) is not None  # holds the row until commit
    results: list[object] = []

    def second_closer() -> None:
        with factory() as session, session.begin():
            results.append(close_duel(session, duel_id, now=T0))

    thread = threading.Thread(target=second_closer)
    thread.start()
    thread.join(timeout=0.5)  # the second closer waits on the first's lock
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert results == [None]
    with factory() as session:
        assert get_duel(session, duel_id).status == DuelStatus.closed


def test_concurrent_sweeps_close_each_due_duel_once(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        due = [_duel(session, GUILD_A, (None, lora), seed=s) for s in range(6)]
        not_due = _duel(session, GUILD_A, (None, lora))
        get_duel(session, not_due).closes_at = T0 + timedelta(days=1)
    barrier = threading.Barrier(3)
    closed: list[int] = []
    lock = threading.Lock()

    def sweep() -> None:
        with factory() as session, session.begin():
            barrier.wait(timeout=10)
            ids = [c.duel_id for c in close_due_duels(session, T0 + timedelta(hours=1))]
        with lock:
            closed.extend(ids)

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(closed) == sorted(due)  # each exactly once, the not-due one left open
    with factory() as session, session.begin():
        assert close_due_duels(session, T0 + timedelta(hours=1)) == []
        assert get_duel(session, not_due).status == DuelStatus.open


# --- consent and forgetting -------------------------------------------------------------


def test_opted_out_votes_never_count_and_forgetting_deletes_them(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        duel_id = _duel(session, GUILD_A, (None, lora), seed=1)
        requested = _duel(session, GUILD_A, (None, lora), seed=2, requested_by=900)
    for user, vote in ((1, "a"), (2, "a"), (3, "b")):
        _vote(factory, duel_id, user, vote)
    _vote(factory, requested, 1, "a")
    with factory() as session, session.begin():
        close_duel(session, duel_id, now=T0)
        close_duel(session, requested, now=T0)
        opt_out(session, 2)
    scope = Scope.guild(GUILD_A)
    with factory() as session:
        assert tally(session, duel_id) == Tally(a=1, b=1)
        assert len(rating_votes(session, scope)) == 3  # two in duel_id, one in requested
    with factory() as session, session.begin():
        opt_in(session, 2)  # consent back: the kept vote counts again
        opt_out(session, 900)  # the requester's prompt: their duel's votes stop counting
    with factory() as session:
        assert tally(session, duel_id) == Tally(a=2, b=1)
        assert tally(session, requested) == Tally()
        assert len(rating_votes(session, scope)) == 3  # 2 back in duel_id, none in requested
    with factory() as session, session.begin():
        forget_user(session, 3)
        forget_user(session, 900)
    with factory() as session:
        assert tally(session, duel_id) == Tally(a=2)
        assert set(session.scalars(select(DuelVote.user_id))) == {1, 2}
        assert session.get(Duel, requested) is None  # the requester's duel went with them


def test_forgetting_frees_a_duels_images_and_keeps_those_still_in_use(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        kept = _duel(session, GUILD_A, (None, lora), seed=1, requested_by=901)
        gone = _duel(session, GUILD_A, (None, lora), seed=2, requested_by=902, post=False)
        set_duel_images(
            session, gone, DuelImage("a" * 64, "blobs/a"), DuelImage("c" * 64, "blobs/c")
        )
    with factory() as session, session.begin():
        orphans = forget_user(session, 902)  # "a" is still shown by the other duel
        assert orphans == ["c" * 64]
        assert blob_in_use(session, "a" * 64) and not blob_in_use(session, "c" * 64)
    with factory() as session, session.begin():
        assert sorted(forget_user(session, 901)) == ["a" * 64, "b" * 64]
        assert session.get(Duel, kept) is None


# --- scope and the rating's arrays -----------------------------------------------------------


def test_another_guilds_duels_are_invisible(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora_a = register_lora(session, "la", guild_id=GUILD_A)
        lora_b = register_lora(session, "lb", guild_id=GUILD_B)
        duel_a = _duel(session, GUILD_A, (None, lora_a))
        duel_b = _duel(session, GUILD_B, (None, lora_b))
        set_sharing(session, GUILD_B, Sharing.pooled)
    _vote(factory, duel_a, 1, "a")
    _vote(factory, duel_b, 1, "a")
    with pytest.raises(DuelNotFound, match=f"no duel {duel_b} in this server"):
        _vote(factory, duel_b, 2, "a", guild_id=GUILD_A)
    with factory() as session, session.begin():
        with pytest.raises(DuelNotFound):
            get_duel(session, duel_b, guild_id=GUILD_A)
        close_duel(session, duel_a, now=T0)
        close_duel(session, duel_b, now=T0)
    with factory() as session:
        models = rating_votes(session, Scope.guild(GUILD_A)).models
        assert models == [BASE_MODEL_ID, lora_a]
        assert head_to_head(session, Scope.guild(GUILD_A), None, lora_b) == Tally()
        assert rating_votes(session, Scope.pooled()).models == [BASE_MODEL_ID, lora_b]


def test_rating_votes_and_head_to_head_by_hand(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD_A)
        other = register_lora(session, "m", guild_id=GUILD_A)
        one = _duel(session, GUILD_A, (None, lora), seed=1)
        two = _duel(session, GUILD_A, (lora, None), seed=1)  # same draw: the opposite sides
        three = _duel(session, GUILD_A, (lora, other), seed=3)
        still_open = _duel(session, GUILD_A, (None, lora), seed=4)
    sides_one, sides_two = _sides(factory, one), _sides(factory, two)
    assert sides_one == sides_two[::-1]
    votes = {one: ["a", "a", "tie", "both_bad"], two: ["b", "a"], three: ["b"], still_open: ["a"]}
    for duel_id, kinds in votes.items():
        for user, kind in enumerate(kinds, start=1):
            _vote(factory, duel_id, user, kind)
    with factory() as session, session.begin():
        for duel_id in (one, two, three):
            close_duel(session, duel_id, now=T0)
    with factory() as session:
        rated = rating_votes(session, Scope.guild(GUILD_A))
    sides = (*sides_one, *sides_two, *_sides(factory, three))
    a1, b1, a2, b2, a3, b3 = (BASE_MODEL_ID if v is None else v for v in sides)
    expected = [(a1, b1, 1.0), (a1, b1, 1.0), (a1, b1, 0.5), (a2, b2, 0.0), (a2, b2, 1.0)]
    expected.append((a3, b3, 0.0))
    assert list(zip(rated.model_a, rated.model_b, rated.outcome, strict=True)) == expected
    assert rated.both_bad == 1 and rated.model_a.typecode == "q"
    with factory() as session:
        wins = head_to_head(session, Scope.guild(GUILD_A), lora, None)
        with_open = head_to_head(session, Scope.guild(GUILD_A), lora, None, closed_only=False)
    # For the LoRA: duel one's A votes go to whoever was A, duel two's sides are swapped.
    lora_is_a = sides_one[0] == lora
    lora_wins = (2 if lora_is_a else 0) + 1  # duel two: one vote for each side
    assert wins == Tally(a=lora_wins, b=4 - lora_wins, tie=1, both_bad=1)
    assert with_open.total == wins.total + 1
