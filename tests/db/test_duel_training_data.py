"""Arena duel votes as HPS training data (issue 15, item 4): closed duels' votes for a side
become two-image choice sets (one per vote) in the same stream as generation choices; ties,
both_bad, open duels, other guilds' duels and the votes of users who opted out (or whose duel
requester did) are left out, forgotten users' are gone; a tiny training run consumes them
through the train job's snapshot."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.arena import DuelImage, close_duel, record_vote
from db.datasets import (
    SPLITS,
    ChoiceSet,
    iter_choice_sets,
    iter_duel_choice_sets,
    split_for_prompt,
)
from db.ingest import ChoiceIn, record_choice, record_generation
from db.models import ChoiceMethod, Sharing
from db.privacy import forget_user, opt_out
from db.prompts import prompt_hash
from db.scope import Scope, set_sharing
from tests.arena_factories import make_duel, register_lora, stored_duel_sides
from tests.factories import make_generation

GUILD_A, GUILD_B = 7, 8  # 7: tests.factories.make_generation's default guild
SALT = "duel-salt"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sides:
    a: DuelImage
    b: DuelImage


def _sides(tag: str) -> Sides:
    sha_a, sha_b = (f"{tag}{side}".ljust(64, "0")[:64] for side in "ab")
    return Sides(DuelImage(sha_a, f"blobs/{sha_a}"), DuelImage(sha_b, f"blobs/{sha_b}"))


def _lora(session: Session, guild_id: int) -> int:
    return register_lora(
        session, f"lora-{guild_id}", guild_id=guild_id, checkpoint_key=f"lora/{guild_id}"
    )


def _posted_duel(
    session: Session,
    guild_id: int,
    lora: int,
    prompt: str,
    sides: Sides,
    *,
    requested_by: int | None = 500,
) -> int:
    duel = make_duel(
        session,
        guild_id=guild_id,
        configurations=(lora, None),
        opened_at=T0,
        prompt=prompt,
        requested_by=requested_by,
        rng=random.Random(0),
        sides=(sides.a, sides.b),
    )
    return duel.id


def _votes(session: Session, duel_id: int, votes: dict[int, str], minute: int = 1) -> None:
    for user, vote in votes.items():
        now = T0 + timedelta(minutes=minute)
        assert record_vote(session, duel_id, user, vote, now=now).outcome.counted


@dataclass(frozen=True)
class World:
    closed: int
    still_open: int
    other_guild: int
    requester_out: int
    sides: Sides


def _world(factory: sessionmaker[Session]) -> World:
    """Guild A: a closed duel with every kind of vote, an open one, one whose requester opts
    out; guild B: a closed duel. User 15 opts out and user 16 is forgotten after voting."""
    sides = _sides("ab")
    with factory() as session, session.begin():
        lora_a, lora_b = _lora(session, GUILD_A), _lora(session, GUILD_B)
        closed = _posted_duel(session, GUILD_A, lora_a, "a lighthouse at dusk", sides)
        _votes(session, closed, {11: "b", 12: "a", 13: "tie", 14: "both_bad", 15: "a", 16: "b"})
        _votes(session, closed, {11: "a"}, minute=2)  # changed: the latest vote stands
        still_open = _posted_duel(session, GUILD_A, lora_a, "a fox", _sides("cd"))
        _votes(session, still_open, {11: "a", 12: "b"})
        other_guild = _posted_duel(session, GUILD_B, lora_b, "a robot", _sides("ef"))
        _votes(session, other_guild, {11: "a", 12: "b"})
        requester_out = _posted_duel(
            session, GUILD_A, lora_a, "a boat", _sides("f0"), requested_by=600
        )
        _votes(session, requester_out, {11: "a"})
        for duel_id in (closed, other_guild, requester_out):
            assert close_duel(session, duel_id, now=T0 + timedelta(minutes=10)) is not None
        opt_out(session, 15)
        opt_out(session, 600)
        forget_user(session, 16)
    return World(closed, still_open, other_guild, requester_out, sides)


def _duel_sets(factory: sessionmaker[Session], scope: Scope, **kwargs: object) -> list[ChoiceSet]:
    with factory() as session:
        return list(iter_choice_sets(session, scope=scope, salt=SALT, **kwargs))  # type: ignore[arg-type]


def test_closed_duels_votes_for_a_side_become_pairwise_sets(
    factory: sessionmaker[Session],
) -> None:
    world = _world(factory)
    sets = _duel_sets(factory, Scope.guild(GUILD_A))
    # User 11 changed b -> a; 12 voted a; 13 tie and 14 both_bad dropped; 15 opted out;
    # 16 forgotten; the open duel and the duel whose requester opted out left out.
    assert [(s.duel_id, s.user_id, s.chosen_index) for s in sets] == [
        (world.closed, 11, 0),
        (world.closed, 12, 0),
    ]
    first = sets[0]
    assert first.source == "duel_vote" and first.generation_id is None
    assert first.prompt == "a lighthouse at dusk"
    assert first.prompt_hash == prompt_hash("a lighthouse at dusk")
    assert first.image_sha256s == (world.sides.a.sha256, world.sides.b.sha256)
    assert first.storage_keys == (world.sides.a.storage_key, world.sides.b.storage_key)
    assert first.split == split_for_prompt(first.prompt_hash, SALT)
    assert first.chosen_at == T0 + timedelta(minutes=2)
    assert len({s.key for s in sets}) == 2 and first.key == f"duel_vote:{first.choice_id}"


def test_a_vote_for_b_chooses_the_second_image_and_a_flag_turns_duels_off(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        duel = _posted_duel(session, GUILD_A, _lora(session, GUILD_A), "a cat", _sides("ba"))
        _votes(session, duel, {21: "b", 22: "a", 23: "b"})
        close_duel(session, duel, now=T0 + timedelta(minutes=5))
    sets = _duel_sets(factory, Scope.guild(GUILD_A))
    assert [(s.user_id, s.chosen_index) for s in sets] == [(21, 1), (22, 0), (23, 1)]
    assert _duel_sets(factory, Scope.guild(GUILD_A), duel_votes=False) == []


def test_guild_scope_as_for_choices(factory: sessionmaker[Session]) -> None:
    world = _world(factory)
    other = _duel_sets(factory, Scope.guild(GUILD_B))
    assert [(s.duel_id, s.user_id, s.chosen_index) for s in other] == [
        (world.other_guild, 11, 0),
        (world.other_guild, 12, 1),
    ]
    # The operators' pooled scope: only pooled guilds' duels.
    assert _duel_sets(factory, Scope.pooled()) == []
    with factory() as session, session.begin():
        set_sharing(session, GUILD_A, Sharing.pooled)
    pooled = _duel_sets(factory, Scope.pooled())
    assert {s.duel_id for s in pooled} == {world.closed}


def test_opted_out_voters_and_requesters_never_appear(factory: sessionmaker[Session]) -> None:
    world = _world(factory)
    with factory() as session, session.begin():
        opt_out(session, 12)
    sets = _duel_sets(factory, Scope.guild(GUILD_A))
    assert [(s.duel_id, s.user_id) for s in sets] == [(world.closed, 11)]
    with factory() as session, session.begin():
        opt_out(session, 500)  # the requester of the other duels: their prompt is out
    assert _duel_sets(factory, Scope.guild(GUILD_A)) == []


def test_cutoff_takes_only_duels_closed_by_then_and_splits_filter(
    factory: sessionmaker[Session],
) -> None:
    world = _world(factory)
    closed_at = T0 + timedelta(minutes=10)
    before = _duel_sets(factory, Scope.guild(GUILD_A), cutoff=closed_at - timedelta(seconds=1))
    assert before == []  # the votes were cast earlier, but the duel was still open
    at = _duel_sets(factory, Scope.guild(GUILD_A), cutoff=closed_at)
    assert {s.duel_id for s in at} == {world.closed}
    with factory() as session:
        by_split = {
            split: list(
                iter_duel_choice_sets(session, scope=Scope.guild(GUILD_A), salt=SALT, split=split)
            )
            for split in SPLITS
        }
    expected = split_for_prompt(prompt_hash("a lighthouse at dusk"), SALT)
    assert {split: len(sets) for split, sets in by_split.items()} == {
        split: (2 if split == expected else 0) for split in SPLITS
    }


def test_choices_come_first_then_duel_votes_with_distinct_keys(
    factory: sessionmaker[Session],
) -> None:
    world = _world(factory)
    with factory() as session, session.begin():
        recorded = record_generation(session, make_generation(requester_id=1, seeds=[1, 2]))
        record_choice(session, ChoiceIn(2, 1, ChoiceMethod.button, recorded.generation_id))
    sets = _duel_sets(factory, Scope.guild(GUILD_A))
    assert [s.source for s in sets] == ["choice", "duel_vote", "duel_vote"]
    assert sets[0].generation_id == recorded.generation_id and sets[0].duel_id is None
    assert sets[0].choice_id == sets[1].choice_id == 1  # ids of two tables: keys differ
    assert len({s.key for s in sets}) == 3
    assert {s.duel_id for s in sets[1:]} == {world.closed}


# --- a training run consumes them ------------------------------------------------------------


def _planted_duels(
    factory: sessionmaker[Session], store_root: Path, count: int
) -> tuple[int, datetime]:
    """``count`` closed duels of planted images (tests.hps.datasets): every voter picks the
    side with the red disc. Returns how many votes name a side, and when the last closed."""
    from media.store import LocalImageStore

    store, rng = LocalImageStore(store_root), random.Random(5)
    votes = 0
    with factory() as session, session.begin():
        lora = _lora(session, GUILD_A)
        for index in range(count):
            planted_side = rng.randrange(2)
            sides = Sides(*stored_duel_sides(store, rng, planted_side))
            duel = _posted_duel(session, GUILD_A, lora, f"a scene number {index}", sides)
            picked = "ab"[planted_side]
            _votes(session, duel, {31: picked, 32: picked, 33: "tie"})
            votes += 2
            close_duel(session, duel, now=T0 + timedelta(minutes=30))
    return votes, T0 + timedelta(minutes=30)


def test_a_tiny_training_run_consumes_duel_votes(
    pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from hps.training.trainer import TrainConfig, train
    from media.store import LocalImageStore
    from worker.snapshot import Snapshot, take_snapshot

    votes, closed_at = _planted_duels(pg_factory, tmp_path / "images", 24)

    def snapshot_of_guild_a(duel_votes: bool) -> Snapshot:
        return take_snapshot(
            pg_factory,
            LocalImageStore(tmp_path / "images"),
            scope=Scope.guild(GUILD_A),
            salt=SALT,
            cutoff=closed_at,
            cache_dir=tmp_path / "cache",
            duel_votes=duel_votes,
        )

    snapshot = snapshot_of_guild_a(duel_votes=True)
    every = snapshot.train + snapshot.validation + snapshot.test
    assert len(every) == votes == 48  # two voters per duel; the ties left out
    assert all(len(s.images) == 2 and Path(str(s.images[0])).is_file() for s in every)
    assert snapshot.train and all(s.split == "train" for s in snapshot.train)
    assert snapshot.description["duel_vote_sets"] == 48
    without = snapshot_of_guild_a(duel_votes=False)
    assert not (without.train + without.validation + without.test)
    assert without.description["duel_votes"] is False
    result = train(
        "tiny",
        None,
        snapshot.train,
        tmp_path / "run",
        TrainConfig(steps=4, batch_size=5, lr=1e-3, device="cpu"),
        trained_on=snapshot.description,
        progress=False,
    )
    assert result.steps == 4 and result.checkpoint.is_file()
    lines = [json.loads(line) for line in result.metrics_file.read_text().splitlines()]
    assert [row["step"] for row in lines] == [1, 2, 3, 4]
    assert all(row["loss"] == pytest.approx(row["loss"]) for row in lines)  # finite, not NaN
