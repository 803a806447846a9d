"""Harvested picks between differently labelled generators as arena rating votes
(db.harvest_ratings, merged by db.leaderboards.guild_rating_votes), on PostgreSQL and SQLite:
the win counts, no evidence from one model's images, guild scope and consent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.arena import DuelImage, close_duel, create_duel, open_duel, record_vote, set_duel_images
from db.harvest_ratings import harvest_rating_votes, image_labels, pick_wins
from db.ingest import ChoiceIn, GenerationIn, record_choice, record_generation
from db.leaderboards import guild_rating_votes
from db.models import ChoiceMethod, ModelKind
from db.privacy import opt_in, opt_out
from db.registry import register_model_version
from db.scope import Scope
from tests.factories import next_message_id, stored_images

GUILD, OTHER_GUILD = 4242, 5353
REQUESTER = 10
MIXED = ["sdxl", "sdxl", "sd-1.5", "sd-3"]
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_seeds = iter(range(1000, 100_000))


def generation(
    factory: sessionmaker[Session],
    params: dict[str, Any],
    picks: dict[int, int | None],
    *,
    guild_id: int = GUILD,
    requester_id: int = REQUESTER,
) -> int:
    """A harvested four-image generation with ``params`` and each user's pick (position)."""
    seeds = [next(_seeds) for _ in range(4)]
    with factory() as session, session.begin():
        recorded = record_generation(
            session,
            GenerationIn(
                source_message_id=next_message_id(),
                channel_id=1,
                guild_id=guild_id,
                prompt="a red fox",
                generator="discord-bot:77",
                images=stored_images(None, seeds),
                requester_id=requester_id,
                params=params,
            ),
        )
        for user, position in picks.items():
            record_choice(
                session,
                ChoiceIn(
                    user_id=user,
                    position=position,
                    method=ChoiceMethod.reaction,
                    generation_id=recorded.generation_id,
                ),
            )
    return recorded.generation_id


def pairs(factory: sessionmaker[Session], guild_id: int = GUILD) -> list[tuple[str, str]]:
    """(winner, loser) names of the guild's rating votes (every vote is won by side A)."""
    with factory() as session:
        votes, names = guild_rating_votes(session, guild_id)
    assert set(votes.outcome) <= {1.0}
    return [(names[a], names[b]) for a, b in zip(votes.model_a, votes.model_b, strict=True)]


def test_a_pick_beats_each_other_label_once_and_skips_are_nothing(
    factory: sessionmaker[Session],
) -> None:
    generation(factory, {"image_models": MIXED}, {1: 0, 2: 2, 3: 3, 4: 1, 5: None})
    assert sorted(pairs(factory)) == sorted(
        [
            ("sdxl", "sd-1.5"), ("sdxl", "sd-3"),  # user 1
            ("sd-1.5", "sd-3"), ("sd-1.5", "sdxl"),  # user 2
            ("sd-3", "sd-1.5"), ("sd-3", "sdxl"),  # user 3
            ("sdxl", "sd-1.5"), ("sdxl", "sd-3"),  # user 4: the other sdxl image
        ]
    )  # fmt: skip
    with factory() as session:
        votes, names = guild_rating_votes(session, GUILD)
        harvested = harvest_rating_votes(session, Scope.guild(GUILD))
    assert harvested.picks == 4 and len(harvested) == 8
    assert names == {-1: "sd-1.5", -2: "sd-3", -3: "sdxl"}
    assert votes.both_bad == 0 and votes.models == [-3, -2, -1]


def test_one_models_images_and_unlabelled_picks_add_nothing(
    factory: sessionmaker[Session],
) -> None:
    generation(factory, {"layout": "2x2 grid", "model": "midjourney v6.1"}, {1: 0, 2: 3})
    generation(factory, {"image_models": ["sdxl"] * 4}, {1: 1, 2: 2})
    generation(factory, {"image_models": ["sdxl", None, None, None]}, {1: 0, 2: 1})
    generation(factory, {"image_models": [None, "sdxl", "sd-1.5", None]}, {1: 0})
    generation(factory, {"steps": 25}, {1: 0})
    assert pairs(factory) == []
    with factory() as session:
        assert harvest_rating_votes(session, Scope.guild(GUILD)).picks == 0


def test_a_generation_label_fills_the_gaps_of_the_per_image_list() -> None:
    labels = image_labels({"model": "midjourney v6.1", "image_models": [None, "midjourney v5.2"]})
    assert labels == ["midjourney v6.1", "midjourney v5.2"]
    assert pick_wins(labels, 1) == [("midjourney v5.2", "midjourney v6.1")]
    assert image_labels({"model": "midjourney v6.1"}) is None
    assert image_labels({"image_models": [7, "", "x" * 65]}) == [None, None, None]
    assert pick_wins(["a", "b"], 5) == []


def test_another_guilds_picks_never_appear(factory: sessionmaker[Session]) -> None:
    generation(factory, {"image_models": MIXED}, {1: 0}, guild_id=OTHER_GUILD)
    generation(factory, {"image_models": ["dall-e 3", "flux", "flux", "flux"]}, {1: 0})
    assert pairs(factory) == [("dall-e 3", "flux")]
    assert pairs(factory, OTHER_GUILD) == [("sdxl", "sd-1.5"), ("sdxl", "sd-3")]


def test_opted_out_choosers_and_requesters_never_appear(factory: sessionmaker[Session]) -> None:
    generation(factory, {"image_models": MIXED}, {1: 0, 2: 2})
    other_requester = 11
    generation(
        factory, {"image_models": ["a", "b", "a", "b"]}, {3: 1}, requester_id=other_requester
    )
    assert len(pairs(factory)) == 5
    with factory() as session, session.begin():
        opt_out(session, 1)  # a chooser: their pick goes
    assert sorted(pairs(factory)) == [("b", "a"), ("sd-1.5", "sd-3"), ("sd-1.5", "sdxl")]
    with factory() as session, session.begin():
        opt_out(session, REQUESTER)  # a requester: every pick on their generations goes
    assert pairs(factory) == [("b", "a")]
    with factory() as session, session.begin():
        opt_in(session, 1)
        opt_in(session, REQUESTER)
    assert len(pairs(factory)) == 5


def test_harvested_labels_rate_beside_the_guilds_duels(factory: sessionmaker[Session]) -> None:
    """Duel votes keep their ids and names; a label named like a configuration is marked."""
    with factory() as session, session.begin():
        lora = register_model_version(
            session, kind=ModelKind.lora, name="liked", checkpoint_key="lora/liked",
            architecture="tiny", guild_id=GUILD,
        ).id  # fmt: skip
        duel = create_duel(
            session, guild_id=GUILD, channel_id=1, prompt="a red circle", generator="toy",
            configurations=(lora, None), open_seconds=600, rng=Random(0),
        )  # fmt: skip
        set_duel_images(session, duel.id, DuelImage("a" * 64, "a"), DuelImage("b" * 64, "b"))
        open_duel(session, duel.id, next_message_id(), now=T0)
        record_vote(session, duel.id, 1, "a", now=T0 + timedelta(seconds=1))
        close_duel(session, duel.id, now=T0 + timedelta(seconds=2))
    generation(factory, {"image_models": ["base", "sdxl", "sdxl", "sdxl"]}, {1: 0})
    with factory() as session:
        votes, names = guild_rating_votes(session, GUILD)
        duels_only, _ = guild_rating_votes(session, GUILD, harvested=False)
    assert len(votes) == 2 and len(duels_only) == 1
    assert names == {0: "base", lora: f"liked (#{lora})", -1: "base (harvested)", -2: "sdxl"}
    assert (votes.model_a[1], votes.model_b[1], votes.outcome[1]) == (-1, -2, 1.0)
