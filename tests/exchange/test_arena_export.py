"""Arena votes as preference data: each counted vote of a closed duel is one Pick-a-Pic row
(side A as image 0, ``model_0``/``model_1`` the configurations, labels 1/0, ties 0.5/0.5,
both_bad left out), guild-scoped and consent applied like every exported choice."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.arena import ExportDuelVote, close_duel, get_duel, record_vote
from db.datasets import SPLITS
from db.models import DuelVoteKind
from db.privacy import forget_user, opt_out
from exchange.export import ExportOptions, export_dataset
from exchange.export_pickapic import PairContext, row_for_duel_vote
from exchange.ids import pseudonym
from media.store import LocalImageStore
from tests.arena_factories import duel_sides, make_duel, register_lora
from tests.factories import stored_images

GUILD, OTHER_GUILD = 7, 8
SPLIT_SALT, USER_SALT = "arena-split", "arena-users"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _vote_row(vote: DuelVoteKind) -> dict[str, Any]:
    export = ExportDuelVote(
        vote_id=5,
        duel_id=3,
        prompt_id=1,
        prompt="a fox",
        prompt_hash="h",
        split="train",
        user_id=9,
        vote=vote,
        voted_at=T0,
        image_a_sha256="a" * 64,
        image_b_sha256="b" * 64,
        model_a="toy",
        model_b="toy+fox-lora",
    )
    return row_for_duel_vote(export, b"A", b"B", PairContext("u", "d", 4))


def test_row_labels_by_hand() -> None:
    a, b, tie = (_vote_row(kind) for kind in (DuelVoteKind.a, DuelVoteKind.b, DuelVoteKind.tie))
    assert (a["label_0"], a["label_1"], a["best_image_uid"]) == (1.0, 0.0, "a" * 64)
    assert (b["label_0"], b["label_1"], b["best_image_uid"]) == (0.0, 1.0, "b" * 64)
    assert (tie["label_0"], tie["label_1"], tie["best_image_uid"]) == (0.5, 0.5, "")
    assert (a["jpg_0"], a["jpg_1"], a["model_0"], a["model_1"]) == (
        b"A",
        b"B",
        "toy",
        "toy+fox-lora",
    )
    assert a["ranking_id"] == -5 and a["num_example_per_prompt"] == 4
    with pytest.raises(ValueError, match="both_bad vote carries no preference"):
        _vote_row(DuelVoteKind.both_bad)


def _closed_duel(
    session: Session,
    store: LocalImageStore,
    guild_id: int,
    lora: int,
    votes: dict[int, str],
    seed: int,
) -> int:
    duel = make_duel(
        session,
        guild_id=guild_id,
        configurations=(None, lora),
        opened_at=T0,
        prompt=f"duel prompt {seed}",
        channel_id=99,
        rng=random.Random(seed),
        sides=duel_sides(stored_images(store, [seed, seed + 1])),
    )
    for user, vote in votes.items():
        assert record_vote(session, duel.id, user, vote, now=T0 + timedelta(seconds=1))
    close_duel(session, duel.id, now=T0 + timedelta(seconds=2))
    return duel.id


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [
        row
        for split in SPLITS
        for path in sorted((folder / "data").glob(f"{split}-*-of-*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]


def test_duel_votes_export_as_pickapic_rows(
    pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    store = LocalImageStore(tmp_path / "images")
    with pg_factory() as session, session.begin():
        lora = register_lora(session, "fox-lora", guild_id=GUILD, checkpoint_key="k")
        other_lora = register_lora(session, "their-lora", guild_id=OTHER_GUILD, checkpoint_key="k2")
        votes = {1: "a", 2: "b", 3: "tie", 4: "both_bad", 5: "a", 6: "b"}
        ours = _closed_duel(session, store, GUILD, lora, votes, seed=10)
        _closed_duel(session, store, OTHER_GUILD, other_lora, {1: "a"}, seed=20)
        opt_out(session, 5)  # opted out after voting: never exported
        forget_user(session, 6)  # forgotten: the vote is gone
        duel = get_duel(session, ours)
        model_0 = "toy" if duel.version_a_id is None else "toy+fox-lora"
        model_1 = "toy+fox-lora" if model_0 == "toy" else "toy"
        shas = (duel.image_a_sha256, duel.image_b_sha256)

    summary = export_dataset(
        pg_factory,
        store,
        tmp_path / "out",
        ExportOptions(SPLIT_SALT, USER_SALT, guild_id=GUILD, formats=("pickapic",)),
    )
    rows = _rows(summary.path)
    assert summary.extra["duel_votes"] == 3 and summary.counts["pairs"] == 3
    by_user = {row["user_id"]: row for row in rows}
    expected = {1: (1.0, 0.0), 2: (0.0, 1.0), 3: (0.5, 0.5)}
    assert set(by_user) == {pseudonym(USER_SALT, "user", user) for user in expected}
    for user, labels in expected.items():
        row = by_user[pseudonym(USER_SALT, "user", user)]
        assert (row["label_0"], row["label_1"]) == labels
        assert (row["model_0"], row["model_1"]) == (model_0, model_1)
        assert (row["image_0_uid"], row["image_1_uid"]) == shas
        assert row["caption"] == "duel prompt 10" and row["num_example_per_prompt"] == 3
        assert row["generation_uid"] == pseudonym(USER_SALT, "duel", ours)
        assert row["jpg_0"][:2] == b"\xff\xd8"  # JPEG bytes of side A


def test_hpd_only_exports_no_duel_votes(pg_factory: sessionmaker[Session], tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    with pg_factory() as session, session.begin():
        lora = register_lora(session, "l", guild_id=GUILD, checkpoint_key="k")
        _closed_duel(session, store, GUILD, lora, {1: "a"}, seed=30)
    summary = export_dataset(
        pg_factory,
        store,
        tmp_path / "out",
        ExportOptions(SPLIT_SALT, USER_SALT, guild_id=GUILD, formats=("hpd",)),
    )
    assert summary.extra["duel_votes"] == 0
