"""The simulated communities' hidden tastes on the toy generator's pictures: measured from the
pixels, learnable from the picks, and opposite in the two guilds of the demo; and how members
vote in arena duels (blind on the pictures, or for a configuration by the ground truth)."""

from __future__ import annotations

import math
import random
from functools import cache
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hps.diffusion import toy_corpus
from sandbox.community import (
    Candidate,
    Community,
    ConfigurationTaste,
    ContentTaste,
    Member,
    PostedDuel,
    Round,
    duel_button,
    duel_id_of,
    measure,
    toy_painter,
)
from sandbox.emulator import DiscordEmulator

ROUNDS = 300  # shared pictures: 1,200 toy images (about a minute on one core)
TRAIN = 200


def scene_image(colour: str, size: str, seed: int = 0) -> Image.Image:
    scene = toy_corpus.Scene(colour, "circle", size, "plain", "white")
    return Image.fromarray(toy_corpus.render(scene, random.Random(seed)))


def test_the_figure_size_is_measured_from_the_pixels() -> None:
    large, small = measure(scene_image("red", "large")), measure(scene_image("blue", "small"))
    assert 0.2 < large.figure_size < 0.5 and 0.03 < small.figure_size < 0.15
    assert large.figure_size > 3 * small.figure_size
    assert measure(Image.new("RGB", (32, 32), (245, 245, 245))).figure_size == 0.0


def test_members_prefer_what_their_hidden_taste_says() -> None:
    rng = random.Random(0)
    fan, contrarian = Member(1, "a"), Member(2, "b", likes_big=False)
    image = scene_image("red", "large")
    small, big = Candidate(image, figure_size=0.2), Candidate(image, figure_size=0.35)
    picks = [fan.pick([small, big], rng) for _ in range(200)]
    assert picks.count(1) > 170  # choosy, not deterministic
    assert picks.count(0) > 0
    assert sum(contrarian.pick([small, big], rng) == 0 for _ in range(200)) > 170


# -- two guilds of opposite tastes, with a preference model on the pictures' feature -----------
def utility(weight: float, candidate: Candidate) -> float:
    return weight * candidate.figure_size


def fit(rounds: list[Round], steps: int = 300, lr: float = 50.0) -> float:
    """A linear preference model fitted to the picks as the HPS loss does: cross-entropy of
    the softmax over each round's pictures on the picked one (full-batch gradient ascent)."""
    weight = 0.0
    for _ in range(steps):
        gradient = 0.0
        for played in rounds:
            scores = [utility(weight, c) for c in played.candidates]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            total = sum(exps)
            expected = sum(
                e / total * c.figure_size for e, c in zip(exps, played.candidates, strict=True)
            )
            gradient += played.candidates[played.choice].figure_size - expected
        weight += lr * gradient / len(rounds)
    return weight


def top1(weight: float, rounds: list[Round]) -> float:
    """Share of rounds whose pick the model ranks first (a model that sees no difference
    ranks by position: the first picture)."""
    hits = sum(
        max(range(len(r.candidates)), key=lambda i: utility(weight, r.candidates[i])) == r.choice
        for r in rounds
    )
    return hits / len(rounds)


@cache
def shared_pictures() -> list[tuple[str, list[Candidate]]]:
    """The toy generator's pictures for ROUNDS prompts, as a community's generator posts them."""
    painter = toy_painter()
    drawer = Community(DiscordEmulator(), seed=99, painter=painter)
    return [drawer.draw() for _ in range(ROUNDS)]


@pytest.mark.slow
async def test_two_guilds_of_opposite_tastes_each_need_their_own_model() -> None:
    emulator = DiscordEmulator()  # not started: the rounds are played without Discord
    painter = toy_painter()
    big = Community(emulator, seed=1, painter=painter)
    small = await Community.in_new_guild(
        emulator, "Miniatures", taste="small", prefix="m-", seed=2, painter=painter
    )
    assert big.guild_id == emulator.guild_id and small.guild_id != big.guild_id
    assert emulator.guild_of(emulator.channels[small.channel("general")]) == small.guild_id
    assert emulator.admins == {big.admin}
    assert emulator.guilds[small.guild_id].admins == {small.admin}
    assert small.forge == big.forge  # the generator bots are the same users in every guild
    # Each guild's majority likes its size; one contrarian the other.
    assert [m.likes_big for m in big.members].count(True) == 5
    assert [m.likes_big for m in small.members].count(False) == 5
    # The prompts are the toy generator's captions; sizes vary within a prompt.
    pictures = shared_pictures()
    assert all(prompt in big.prompts for prompt, _ in pictures)
    spread = [np.ptp([c.figure_size for c in cs]) for _, cs in pictures]
    assert float(np.median(spread)) > 0.1, spread

    # The same pictures, picked by each guild's members.
    train, test = {}, {}
    for name, community in (("big", big), ("small", small)):
        rounds = [community.pick_round(prompt, candidates) for prompt, candidates in pictures]
        train[name], test[name] = rounds[:TRAIN], rounds[TRAIN:]
    models = {
        "big": fit(train["big"]),
        "small": fit(train["small"]),
        "pooled": fit(train["big"] + train["small"]),
    }
    # How much each model likes size: the guilds' models have opposite signs; pooled, they
    # nearly cancel out (measured: big 9.5, small -4.3, pooled 2.1; not symmetric because a
    # picture without a figure, size 0, is only ever a big-liker's clear loser).
    assert models["big"] > 3 and models["small"] < -3, models
    assert abs(models["pooled"]) < 0.25 * (models["big"] - models["small"]), models
    # On its own held-out rounds (100 each: a standard error near 5 points), each guild's
    # model beats the other guild's by far more than sampling noise (with one feature, the
    # pooled model ranks like one of them: its near-zero weight is the claim above).
    for own, other in (("big", "small"), ("small", "big")):
        accuracy = {name: top1(weight, test[own]) for name, weight in models.items()}
        assert accuracy[own] > 0.35, accuracy  # chance: 0.25 (four pictures)
        assert accuracy[own] > accuracy[other] + 0.2, accuracy


# -- arena duels: how members vote --------------------------------------------------------------
def _duel(image_a: Image.Image, image_b: Image.Image, duel_id: int = 7) -> PostedDuel:
    buttons = [
        {"type": 2, "custom_id": f"hps:duel:{duel_id}:{vote}"}
        for vote in ("a", "b", "tie", "both_bad")
    ]
    message = {"id": "1", "components": [{"type": 1, "components": buttons}]}
    return PostedDuel(message, duel_id, image_a, image_b)


def test_a_blind_vote_reads_the_pictures_with_the_members_taste() -> None:
    rng = random.Random(0)
    fan, contrarian = Member(1, "a"), Member(2, "b", likes_big=False)
    big, small = scene_image("red", "large"), scene_image("blue", "small")
    taste = ContentTaste()
    votes = [taste.vote(fan, _duel(big, small), rng) for _ in range(200)]
    assert votes.count("a") > 170 and set(votes) <= {"a", "b"}
    assert sum(taste.vote(fan, _duel(small, big), rng) == "b" for _ in range(200)) > 170
    assert sum(taste.vote(contrarian, _duel(big, small), rng) == "b" for _ in range(200)) > 170
    # The same picture twice looks the same: a tie; two pictures without a figure: both bad.
    assert taste.vote(fan, _duel(big, big.copy()), rng) == "tie"
    blank = Image.new("RGB", (32, 32), (245, 245, 245))
    assert taste.vote(fan, _duel(blank, blank.copy()), rng) == "both_bad"


def test_the_buttons_of_a_posted_duel() -> None:
    duel = _duel(Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4)), duel_id=42)
    assert duel_id_of(duel.message) == 42
    assert duel_button(duel.message, "both_bad") == "hps:duel:42:both_bad"
    assert duel_id_of({"components": []}) is None  # a revealed duel has no buttons
    with pytest.raises(ValueError, match="no 'tie' button"):
        duel_button({"id": "2", "components": []}, "tie")


def test_a_taste_for_a_configuration_reads_the_sides_from_the_database(
    sqlite_factory: Any,
) -> None:
    from db.arena import create_duel
    from db.models import ModelKind
    from db.registry import register_model_version

    with sqlite_factory() as session, session.begin():
        liked = register_model_version(
            session, kind=ModelKind.lora, name="liked", checkpoint_key="lora/liked",
            architecture="tiny-sd", guild_id=5,
        ).id  # fmt: skip
        duels = [
            create_duel(
                session, guild_id=5, channel_id=1, prompt="a red circle", generator="toy",
                configurations=(liked, None), open_seconds=60, rng=random.Random(seed),
            ).id
            for seed in range(6)
        ]  # fmt: skip
    picture = Image.new("RGB", (4, 4))
    member, rng = Member(1, "a"), random.Random(0)
    always = ConfigurationTaste(sqlite_factory, favoured=liked, p=1.0)
    for duel_id in duels:
        side_a, _side_b = always.sides(duel_id)
        expected = "a" if side_a == liked else "b"
        assert always.vote(member, _duel(picture, picture, duel_id), rng) == expected
    assert {always.sides(d)[0] for d in duels} == {liked, None}  # both sides occur
    # Indifferent (p = 0.5): one draw per vote, a coin flip, whatever the sides.
    coin = ConfigurationTaste(sqlite_factory, favoured=liked, p=0.5)
    votes = [coin.vote(member, _duel(picture, picture, d), rng) for d in duels * 50]
    assert 120 < votes.count("a") < 180
    with pytest.raises(ValueError, match="p must be a probability"):
        ConfigurationTaste(sqlite_factory, favoured=liked, p=1.5)
