"""The arena's human gate (db.arena_gate) on PostgreSQL and SQLite: settings and their
validation, runs and their scheduled duels (the guild's own consenting prompts only), the
decision (a clear majority passes and promotes, split or too few votes refuse), exactly once
when a vote and the sweep close the run's duels at the same time, hand promotion refused while
gated, the scheduled duels' jobs, and the rule restated from hps.arena.gate."""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from db.arena import (
    DuelImage,
    Tally,
    close_due_duels,
    generator_name,
    head_to_head,
    iter_export_duel_votes,
    open_duel,
    record_vote,
    set_duel_images,
    tally,
)
from db.arena_gate import (
    GateSettings,
    InvalidArenaSettings,
    PromotionGated,
    attach_job,
    check_promotion_allowed,
    close_failed_duels,
    decide_gate,
    duels_awaiting_job,
    evaluate_gate_run,
    gate_prompts,
    get_arena_settings,
    set_arena_settings,
    settle_after_close,
    settle_emptied_runs,
    stale_duel_jobs,
    start_gate_run,
)
from db.datasets import iter_duel_choice_sets
from db.ingest import record_generation
from db.jobs import create_job, fail_job
from db.models import (
    ArenaSettings,
    Duel,
    DuelStatus,
    GateRun,
    GateRunStatus,
    Job,
    ModelKind,
    ModelStatus,
    ModelVersion,
    OutboxMessage,
)
from db.privacy import forget_user, opt_out
from db.registry import promote_model_version, register_model_version
from db.scope import Scope
from tests.factories import make_generation

GUILD_A, GUILD_B = 1001, 2002
CHANNEL_A, CHANNEL_B = 11, 22
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_message_ids = itertools.count(8_000_000)
_voters = itertools.count(70_000)


@pytest.fixture(autouse=True)
def _clean_settings(pg_factory: sessionmaker[Session]) -> Iterator[None]:
    # tests/conftest.py's TRUNCATE list predates arena_settings (no foreign key cascades to
    # it); SQLite databases are per test anyway.
    yield
    with pg_factory() as session, session.begin():
        session.execute(delete(ArenaSettings))


def _lora(session: Session, guild_id: int, name: str, *, active: bool = False) -> int:
    version = register_model_version(
        session,
        kind=ModelKind.lora,
        name=name,
        checkpoint_key=f"lora/{name}",
        architecture="tiny",
        guild_id=guild_id,
    )
    if active:
        promote_model_version(session, version.id, Scope.guild(guild_id))
    return version.id


def _gated(
    factory: sessionmaker[Session], guild_id: int = GUILD_A, **settings: object
) -> GateSettings:
    with factory() as session, session.begin():
        return set_arena_settings(session, guild_id, gate_enabled=True, **settings)


def _start(
    factory: sessionmaker[Session], guild_id: int = GUILD_A, *, active: bool = True
) -> tuple[int, int | None, int]:
    """(candidate, compared, run id): a candidate against an active LoRA (or base)."""
    with factory() as session, session.begin():
        compared = _lora(session, guild_id, f"old-{guild_id}", active=True) if active else None
        candidate = _lora(session, guild_id, f"new-{guild_id}")
        run = start_gate_run(
            session,
            guild_id=guild_id,
            candidate_id=candidate,
            channel_id=CHANNEL_A,
            generator="toy",
            fallback_prompts=["a held-out lighthouse", "a held-out fox"],
            rng=random.Random(0),
        )
        assert run is not None
        return candidate, compared, run.id


def _post_all(factory: sessionmaker[Session], run_id: int) -> list[int]:
    with factory() as session, session.begin():
        duels = session.scalars(select(Duel).where(Duel.gate_run_id == run_id).order_by(Duel.id))
        ids = []
        for duel in duels:
            set_duel_images(
                session, duel.id, DuelImage("a" * 64, "k/a"), DuelImage("b" * 64, "k/b")
            )
            open_duel(session, duel.id, next(_message_ids), now=T0)
            ids.append(duel.id)
        return ids


def _side_of(factory: sessionmaker[Session], duel_id: int, version: int | None) -> str:
    with factory() as session:
        duel = session.get(Duel, duel_id)
        assert duel is not None
        return "a" if duel.version_a_id == version else "b"


def _vote(
    factory: sessionmaker[Session], duel_id: int, vote: str, voter: int | None = None
) -> None:
    with factory() as session, session.begin():
        result = record_vote(
            session, duel_id, voter or next(_voters), vote, now=T0 + timedelta(seconds=1)
        )
        assert result.outcome.counted
        if result.closed is not None:
            settle_after_close(session, result.closed)


def _votes(
    factory: sessionmaker[Session], duel_id: int, candidate: int, *, wins: int, losses: int
) -> None:
    side = _side_of(factory, duel_id, candidate)
    other = "b" if side == "a" else "a"
    for vote in [side] * wins + [other] * losses:
        _vote(factory, duel_id, vote)


def _run(factory: sessionmaker[Session], run_id: int) -> GateRun:
    with factory() as session:
        run = session.get(GateRun, run_id)
        assert run is not None
        return run


def _status(factory: sessionmaker[Session], version_id: int) -> ModelStatus:
    with factory() as session:
        version = session.get(ModelVersion, version_id)
        assert version is not None
        return version.status


def _decisions(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with factory() as session:
        query = select(OutboxMessage).where(OutboxMessage.kind == "gate_decision")
        return list(session.scalars(query))


# --- settings -------------------------------------------------------------------------------


def test_settings_default_change_and_stay_per_guild(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        assert get_arena_settings(session, GUILD_A) == GateSettings(GUILD_A)
        changed = set_arena_settings(
            session, GUILD_A, gate_enabled=True, min_votes=12, arena_channel_id=CHANNEL_A
        )
    assert changed.gate_enabled and changed.min_votes == 12 and changed.threshold == 0.5
    with factory() as session, session.begin():
        assert get_arena_settings(session, GUILD_A) == changed
        # Guild B's settings are its own: still the defaults, and changing them leaves A's.
        assert get_arena_settings(session, GUILD_B) == GateSettings(GUILD_B)
        set_arena_settings(session, GUILD_B, threshold=0.6)
        again = set_arena_settings(session, GUILD_A, votes_per_duel=5)
    assert again == GateSettings(
        GUILD_A, True, 12, 0.5, 6, 5, 24 * 3600, CHANNEL_A
    ) and again.policy_fields() == {"min_votes": 12, "level": 0.95, "threshold": 0.5,
                                    "both_bad": "tie"}  # fmt: skip
    with factory() as session, session.begin():
        cleared = set_arena_settings(session, GUILD_A, clear_channel=True)
    assert cleared.arena_channel_id is None and cleared.votes_per_duel == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"min_votes": 0}, "min_votes must be a whole number 1..10000, not 0"),
        ({"threshold": 1.0}, "threshold must be at least 0 and below 1, not 1.0"),
        ({"threshold": -0.1}, "threshold must be at least 0 and below 1"),
        ({"duels_per_candidate": 51}, "duels_per_candidate must be a whole number 1..50"),
        ({"votes_per_duel": 0}, "votes_per_duel must be a whole number 1..1000"),
        ({"duel_open_seconds": 5}, "duel_open_seconds must be a whole number 60.."),
        ({"arena_channel_id": -3}, "not a channel id"),
        ({"colour": "red"}, "unknown arena setting(s): colour"),
    ],
)
def test_invalid_settings_are_refused_and_nothing_changes(
    factory: sessionmaker[Session], change: dict[str, object], message: str
) -> None:
    with factory() as session, session.begin():
        set_arena_settings(session, GUILD_A, min_votes=20)
    with pytest.raises(InvalidArenaSettings, match=message.replace("(", r"\(").replace(")", r"\)")):
        with factory() as session, session.begin():
            set_arena_settings(session, GUILD_A, gate_enabled=True, **change)
    with factory() as session:
        assert get_arena_settings(session, GUILD_A) == GateSettings(GUILD_A, min_votes=20)


# --- the rule is hps.arena.gate's -----------------------------------------------------------


def test_decide_gate_is_hps_gate_decision() -> None:
    from hps.arena.gate import GatePolicy, gate_decision
    from hps.arena.ratings import HeadToHead

    counts = [0, 1, 3, 8, 20]
    for wins, ties, losses, both_bad in itertools.product(counts, repeat=4):
        for min_votes, threshold in ((1, 0.5), (10, 0.5), (30, 0.6), (5, 0.0)):
            settings = GateSettings(GUILD_A, min_votes=min_votes, threshold=threshold)
            record = HeadToHead("new", "old", wins, ties, losses, both_bad)
            expected = gate_decision(record, GatePolicy(**settings.policy_fields())).to_dict()
            tally = Tally(a=wins, b=losses, tie=ties, both_bad=both_bad)
            assert decide_gate(tally, settings, "new", "old") == expected


# --- runs and their duels -------------------------------------------------------------------


def test_no_run_while_the_gate_is_off(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        candidate = _lora(session, GUILD_A, "c")
        assert (
            start_gate_run(
                session, guild_id=GUILD_A, candidate_id=candidate, channel_id=1, generator="toy"
            )
            is None
        )
        assert session.scalars(select(Duel)).all() == []


def test_a_run_schedules_duels_on_its_guilds_consenting_prompts(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        for prompt in ("a red barn", "a blue boat"):
            record_generation(session, make_generation(prompt=prompt, guild_id=GUILD_A))
        record_generation(session, make_generation(prompt="B's secret castle", guild_id=GUILD_B))
        record_generation(
            session, make_generation(prompt="mallory's tower", guild_id=GUILD_A, requester_id=66)
        )
        opt_out(session, 66)
    _gated(factory, duels_per_candidate=5, votes_per_duel=7, arena_channel_id=CHANNEL_B)
    candidate, compared, run_id = _start(factory)
    with factory() as session:
        run = session.get(GateRun, run_id)
        assert run is not None and run.status == GateRunStatus.running
        assert (run.candidate_id, run.compared_id, run.channel_id) == (
            candidate,
            compared,
            CHANNEL_B,
        )
        duels = session.scalars(select(Duel).where(Duel.gate_run_id == run_id)).all()
        assert len(duels) == 5
        for duel in duels:
            assert duel.status == DuelStatus.pending and duel.requested_by is None
            assert {duel.version_a_id, duel.version_b_id} == {candidate, compared}
            assert (duel.guild_id, duel.channel_id, duel.max_votes) == (GUILD_A, CHANNEL_B, 7)
        prompts = gate_prompts(session, GUILD_A, 5, ["a held-out lighthouse"])
    # The guild's own (newest first, with their author), then the held-out ones (nobody's),
    # in turn; never B's or mallory's.
    assert prompts == [
        ("a blue boat", 42),
        ("a red barn", 42),
        ("a held-out lighthouse", None),
        ("a blue boat", 42),
        ("a red barn", 42),
    ]
    with factory() as session:
        authors = session.scalars(select(Duel.prompt_author_id).where(Duel.gate_run_id == run_id))
        assert sorted(authors, key=str) == [42, 42, 42, None, None]  # two held-out prompts


def test_a_run_without_any_prompt_is_refused_at_once(factory: sessionmaker[Session]) -> None:
    _gated(factory)
    with factory() as session, session.begin():
        candidate = _lora(session, GUILD_A, "c")
        run = start_gate_run(
            session, guild_id=GUILD_A, candidate_id=candidate, channel_id=1, generator="toy"
        )
        assert run is not None and run.status == GateRunStatus.refused
        assert run.compared_id is None  # no active LoRA: against the base generator
    [posted] = _decisions(factory)
    assert "no prompts" in posted.payload["decision"]["reason"]
    assert posted.payload["compared"] == "base"
    assert _status(factory, candidate) == ModelStatus.candidate


# --- decisions ------------------------------------------------------------------------------


def test_a_clear_majority_over_min_votes_passes_and_promotes(
    factory: sessionmaker[Session],
) -> None:
    _gated(factory, min_votes=15, duels_per_candidate=3, votes_per_duel=10)
    candidate, compared, run_id = _start(factory)
    first, second, _third = _post_all(factory, run_id)
    _votes(factory, first, candidate, wins=9, losses=1)  # closes: 10 votes, fewer than 15
    assert _run(factory, run_id).status == GateRunStatus.running and not _decisions(factory)
    _votes(factory, second, candidate, wins=9, losses=1)  # 18 of 20: passes
    run = _run(factory, run_id)
    assert run.status == GateRunStatus.passed and run.decision is not None
    assert run.decision["passed"] and run.decision["votes"] == 20
    assert run.decision["win_rate"] == 0.9 and run.decision["interval"][0] > 0.5
    assert _status(factory, candidate) == ModelStatus.active
    assert compared is not None and _status(factory, compared) == ModelStatus.retired
    [posted] = _decisions(factory)
    assert posted.channel_id == CHANNEL_A and posted.guild_id == GUILD_A
    assert posted.payload["promoted"] and posted.payload["status"] == "passed"
    assert posted.payload["decision"] == run.decision
    with factory() as session, session.begin():  # a later look changes nothing
        assert evaluate_gate_run(session, run_id) is None
    assert len(_decisions(factory)) == 1


def test_split_votes_refuse_once_every_duel_closed(factory: sessionmaker[Session]) -> None:
    _gated(factory, min_votes=10, duels_per_candidate=2, votes_per_duel=10)
    candidate, compared, run_id = _start(factory)
    for duel_id in _post_all(factory, run_id):
        _votes(factory, duel_id, candidate, wins=5, losses=5)
    run = _run(factory, run_id)
    assert run.status == GateRunStatus.refused and run.decision is not None
    assert run.decision["votes"] == 20 and run.decision["win_rate"] == 0.5
    assert "reaches 0.5" in run.decision["reason"]
    assert _status(factory, candidate) == ModelStatus.candidate
    assert compared is not None and _status(factory, compared) == ModelStatus.active
    [posted] = _decisions(factory)
    assert posted.payload["status"] == "refused" and not posted.payload["promoted"]


def test_too_few_votes_refuse_when_the_sweep_closes_the_last_duel(
    factory: sessionmaker[Session],
) -> None:
    _gated(factory, min_votes=30, duels_per_candidate=2, votes_per_duel=10)
    candidate, _compared, run_id = _start(factory, active=False)
    for duel_id in _post_all(factory, run_id):
        _votes(factory, duel_id, candidate, wins=4, losses=0)  # unanimous, but only 8
    with factory() as session, session.begin():
        for closed in close_due_duels(session, now=T0 + timedelta(days=2)):
            settle_after_close(session, closed)
    run = _run(factory, run_id)
    assert run.status == GateRunStatus.refused and run.decision is not None
    assert run.decision["reason"].startswith(f"new-{GUILD_A} (#{candidate}) against base: ")
    assert "needs 30 votes, has 8" in run.decision["reason"]
    assert _status(factory, candidate) == ModelStatus.candidate


def test_a_vote_and_the_sweep_closing_at_once_decide_exactly_once(
    pg_factory: sessionmaker[Session],
) -> None:
    factory = pg_factory
    _gated(factory, min_votes=10, duels_per_candidate=2, votes_per_duel=6)
    candidate, _compared, run_id = _start(factory)
    by_vote, by_sweep = _post_all(factory, run_id)
    _votes(factory, by_vote, candidate, wins=5, losses=0)  # the 6th vote closes it
    _votes(factory, by_sweep, candidate, wins=5, losses=0)  # left to the sweep
    with factory() as session, session.begin():  # only by_sweep is due
        session.execute(
            Duel.__table__.update()
            .where(Duel.id == by_vote)
            .values(closes_at=T0 + timedelta(days=30))
        )
    barrier = threading.Barrier(2)
    decided: list[object] = []

    def voter() -> None:
        with factory() as session, session.begin():
            side = _side_of(factory, by_vote, candidate)
            result = record_vote(session, by_vote, next(_voters), side, now=T0)
            assert result.closed is not None
            barrier.wait(timeout=10)
            decided.append(settle_after_close(session, result.closed))

    def sweeper() -> None:
        with factory() as session, session.begin():
            [closed] = close_due_duels(session, now=T0 + timedelta(days=2))
            barrier.wait(timeout=10)
            decided.append(settle_after_close(session, closed))

    threads = [threading.Thread(target=voter), threading.Thread(target=sweeper)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(map(str, decided)) == ["None", "passed"]
    assert _run(factory, run_id).decision["votes"] == 11  # type: ignore[index]
    assert _status(factory, candidate) == ModelStatus.active
    assert len(_decisions(factory)) == 1


# --- promotion by hand ----------------------------------------------------------------------


def test_hand_promotion_waits_for_the_gate(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        ungated = _lora(session, GUILD_A, "before-the-gate")
        hps_model = register_model_version(
            session, kind=ModelKind.hps, name="h", checkpoint_key="h", architecture="tiny",
            guild_id=GUILD_A,
        ).id  # fmt: skip
        check_promotion_allowed(session, GUILD_A, ungated)  # the gate is off
    _gated(factory, min_votes=4, duels_per_candidate=1, votes_per_duel=4)
    candidate, _compared, run_id = _start(factory)
    with factory() as session, session.begin():
        check_promotion_allowed(session, GUILD_A, hps_model)  # the gate is about LoRAs
        check_promotion_allowed(session, GUILD_B, candidate)  # not B's to judge
        with pytest.raises(PromotionGated, match="has no arena run"):
            check_promotion_allowed(session, GUILD_A, ungated)
    [duel_id] = _post_all(factory, run_id)
    _votes(factory, duel_id, candidate, wins=1, losses=1)
    with factory() as session, pytest.raises(PromotionGated) as refused:
        check_promotion_allowed(session, GUILD_A, candidate)
    assert "still running" in str(refused.value) and "needs 4 votes, has 2" in str(refused.value)
    _votes(factory, duel_id, candidate, wins=2, losses=0)
    with factory() as session, session.begin():
        with pytest.raises(PromotionGated, match="is refused"):
            check_promotion_allowed(session, GUILD_A, candidate)


# --- scheduled duels' jobs ------------------------------------------------------------------


def test_each_scheduled_duel_gets_one_job_and_failed_ones_close(
    factory: sessionmaker[Session],
) -> None:
    _gated(factory, min_votes=4, duels_per_candidate=2, votes_per_duel=4)
    candidate, _compared, _run_id = _start(factory)
    with factory() as session, session.begin():
        scheduled = duels_awaiting_job(session)
        assert len(scheduled) == 2 and {s.guild_id for s in scheduled} == {GUILD_A}
        jobs = []
        for duel in scheduled:
            job = create_job(session, "duel", {"duel_id": duel.duel_id}, guild_id=GUILD_A)
            attach_job(session, duel.duel_id, job.id)
            jobs.append(job.id)
    with factory() as session, session.begin():
        assert duels_awaiting_job(session) == []
        assert stale_duel_jobs(session) == []  # just sent
        later = datetime.now(UTC) + timedelta(hours=1)
        assert sorted(stale_duel_jobs(session, later)) == sorted(jobs)
        assert stale_duel_jobs(session, later) == []  # sent again just now
        fail_job(session, jobs[0], "boom")
        fail_job(session, jobs[1], "boom")
        closed = close_failed_duels(session)
        assert len(closed) == 2
        # Both closed in this transaction: the first settle sees every duel closed.
        assert [settle_after_close(session, duel) for duel in closed] == ["refused", None]
    assert _status(factory, candidate) == ModelStatus.candidate
    with factory() as session, session.begin():
        assert close_failed_duels(session) == []
        assert session.scalar(select(Job.id).where(Job.id == uuid.uuid4())) is None


def _queue(factory: sessionmaker[Session], duel_ids: list[int]) -> list[uuid.UUID]:
    """Queue the duel jobs of some scheduled duels, as the bot's delivery loop does."""
    with factory() as session, session.begin():
        jobs = []
        for duel_id in duel_ids:
            job = create_job(session, "duel", {"duel_id": duel_id}, guild_id=GUILD_A)
            attach_job(session, duel_id, job.id)
            jobs.append(job.id)
        return jobs


def _post(factory: sessionmaker[Session], duel_id: int) -> None:
    with factory() as session, session.begin():
        set_duel_images(session, duel_id, DuelImage("a" * 64, "k/a"), DuelImage("b" * 64, "k/b"))
        open_duel(session, duel_id, next(_message_ids), now=T0)


def test_an_early_decision_cancels_the_duels_not_yet_queued(
    factory: sessionmaker[Session],
) -> None:
    _gated(factory, min_votes=8, duels_per_candidate=5, votes_per_duel=10)
    candidate, compared, run_id = _start(factory)
    with factory() as session:
        duel_ids = list(
            session.scalars(select(Duel.id).where(Duel.gate_run_id == run_id).order_by(Duel.id))
        )
    decider, voting, queued, *unqueued = duel_ids
    _queue(factory, [decider, voting, queued])
    _post(factory, decider)
    _post(factory, voting)
    _votes(factory, voting, candidate, wins=1, losses=1)  # open, members voting
    _votes(factory, decider, candidate, wins=9, losses=1)  # closes: 10 votes, 90%: passes
    run = _run(factory, run_id)
    assert run.status == GateRunStatus.passed and run.decision is not None
    assert _status(factory, candidate) == ModelStatus.active
    with factory() as session:
        for duel_id in unqueued:  # never generated nor posted: closed with the decision
            duel = session.get(Duel, duel_id)
            assert duel is not None and duel.status == DuelStatus.closed
            assert duel.close_reason == "manual" and duel.closed_at == run.decided_at
            assert duel.message_id is None and duel.job_id is None
            assert tally(session, duel_id).total == 0
        rows = session.execute(select(Duel.id, Duel.status).where(Duel.id.in_([voting, queued])))
        assert {i: s for i, s in rows} == {voting: DuelStatus.open, queued: DuelStatus.pending}
    with factory() as session, session.begin():
        assert duels_awaiting_job(session) == []
        assert close_failed_duels(session) == []
    # The duels already under way go on and close as any duel; the run stays decided once.
    _post(factory, queued)
    _votes(factory, voting, candidate, wins=0, losses=8)  # the 10th vote closes it
    with factory() as session, session.begin():
        [closed] = close_due_duels(session, now=T0 + timedelta(days=2))
        assert closed.duel_id == queued and closed.message_id is not None
        assert settle_after_close(session, closed) is None
        # The cancelled duels are closed already: no closer returns them (so no reveal).
        assert close_due_duels(session, now=T0 + timedelta(days=3)) == []
    with factory() as session:
        assert session.scalar(select(Duel.status).where(Duel.id == voting)) == DuelStatus.closed
        # Only the posted duels' votes count: the cancelled ones add none.
        record = head_to_head(
            session, Scope.guild(GUILD_A), candidate, compared, gate_run_id=run_id
        )
        assert record.total == 20
        kinds = session.scalars(select(OutboxMessage.kind)).all()
    assert kinds == ["gate_decision"]
    assert _run(factory, run_id).decision == run.decision
    assert len(_decisions(factory)) == 1


def test_a_duel_being_queued_as_the_run_is_decided_keeps_its_job(
    pg_factory: sessionmaker[Session],
) -> None:
    factory = pg_factory
    _gated(factory, min_votes=4, duels_per_candidate=3, votes_per_duel=4)
    candidate, _compared, run_id = _start(factory)
    with factory() as session:
        decider, *later = session.scalars(
            select(Duel.id).where(Duel.gate_run_id == run_id).order_by(Duel.id)
        )
    _queue(factory, [decider])
    _post(factory, decider)
    _votes(factory, decider, candidate, wins=3, losses=0)
    barrier = threading.Barrier(2)
    taken: list[int] = []

    def bot() -> None:  # holds the duels' row locks while the decisive vote comes in
        with factory() as session, session.begin():
            scheduled = duels_awaiting_job(session)
            barrier.wait(timeout=10)
            time.sleep(0.5)
            for duel in scheduled:
                job = create_job(session, "duel", {"duel_id": duel.duel_id}, guild_id=GUILD_A)
                attach_job(session, duel.duel_id, job.id)
                taken.append(duel.duel_id)

    def voter() -> None:
        barrier.wait(timeout=10)
        _votes(factory, decider, candidate, wins=1, losses=0)  # 4 of 4: passes

    threads = [threading.Thread(target=bot), threading.Thread(target=voter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(taken) == later
    assert _run(factory, run_id).status == GateRunStatus.passed
    with factory() as session:
        for duel_id in later:  # queued before the decision saw them: they go on
            duel = session.get(Duel, duel_id)
            assert duel is not None and duel.status == DuelStatus.pending
            assert duel.job_id is not None


def test_forgetting_and_deleting_models_keep_working(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        record_generation(session, make_generation(prompt="alice's owl", guild_id=GUILD_A))
    _gated(factory, min_votes=4, duels_per_candidate=2, votes_per_duel=10)
    candidate, _compared, run_id = _start(factory)
    owl, held_out = _post_all(factory, run_id)
    voter = next(_voters)
    _vote(factory, owl, "a", voter)
    with factory() as session, session.begin():
        forget_user(session, voter)
        assert session.get(Duel, held_out) is not None
        forget_user(session, 42)  # the owl's author: the duel on her words goes with her
    with factory() as session, session.begin():
        assert session.get(Duel, owl) is None and session.get(Duel, held_out) is not None
        close_due_duels(session, now=T0 + timedelta(days=2))  # the held-out duel: no votes
        assert settle_emptied_runs(session) == [GateRunStatus.refused]  # nobody closed it
        assert settle_emptied_runs(session) == []
    [posted] = _decisions(factory)
    assert posted.payload["status"] == "refused" and posted.payload["decision"]["votes"] == 0
    with factory() as session, session.begin():
        session.delete(session.get(ModelVersion, candidate))
    with factory() as session:
        assert session.get(GateRun, run_id) is None and session.get(Duel, held_out) is None


def test_an_opted_out_prompt_author_takes_the_votes_out_of_data(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        record_generation(session, make_generation(prompt="alice's owl", guild_id=GUILD_A))
    _gated(factory, min_votes=50, duels_per_candidate=1, votes_per_duel=2)
    candidate, _compared, run_id = _start(factory)
    [owl] = _post_all(factory, run_id)
    _votes(factory, owl, candidate, wins=2, losses=0)

    def used(session: Session) -> tuple[int, int, int]:
        exported = list(iter_export_duel_votes(session, scope=Scope.guild(GUILD_A), split_salt="s"))
        sets = list(iter_duel_choice_sets(session, scope=Scope.guild(GUILD_A), salt="s"))
        return len(exported), len(sets), tally(session, owl).total

    with factory() as session:
        assert used(session) == (2, 2, 2)
    with factory() as session, session.begin():
        opt_out(session, 42)
    with factory() as session:
        assert used(session) == (0, 0, 0)


def test_generator_names_never_show_a_path() -> None:
    assert generator_name("") == "hps-sd"
    assert generator_name("toy") == "toy"
    assert generator_name("/srv/models/stable-diffusion-v1-5/") == "stable-diffusion-v1-5"
    assert generator_name("C:\\models\\sd.safetensors") == "sd.safetensors"
