"""Issue 15's community test: simulated members with a hidden taste between two model
configurations vote in blind duels through the real stack, and the leaderboard and the human
gate judge their votes.

A guild has an active LoRA and a newer candidate; its human gate is on, and the candidate's
gate run schedules ``DUELS`` duels (``db.arena_gate.start_gate_run``, as the adapt job does).
The bot's delivery rounds queue each duel's job, a worker process (Redis broker, the tiny Stable
Diffusion) generates both sides with one seed, the bot posts the duel with its buttons and opens
it, every member clicks A/B/tie/both bad through the emulator, the vote that reaches the duel's
limit closes it (reveal, and the gate's judgement in the same transaction). Then the leaderboard
of the guild's closed duels (``db.arena.rating_votes`` -> ``hps.arena.ratings``, and the
``hps leaderboard`` command) and the gate's decision are read.

The two LoRAs draw alike pictures, so the members' taste is
:class:`~sandbox.community.ConfigurationTaste`: it favours the candidate with a probability and
reads which side it is on from the database (the simulation's ground truth). Its votes come
from the community's seeded stream, one draw per vote whatever the sides and the order of the
clicks, so the number of votes for each configuration, and so the win rate and its interval,
are the same on every run (the sides, drawn by the product, only mirror them).

What is asserted (``DUELS`` = 6 duels x ``MEMBERS`` = 24 votes = 144 votes; the gate needs all
144, so it decides when the last duel closes):
- a community that likes the candidate (p = 0.8): the candidate's head-to-head win rate has a
  95% Wilson interval whose low end is above 0.5, it is ranked first, the two configurations'
  95% bootstrap rating intervals do not overlap, and the gate passes and promotes it;
- a community that cannot tell them apart (p = 0.5): the win-rate interval contains 0.5, the
  rating intervals overlap, and the gate refuses (the candidate stays a candidate).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hps.arena.ratings import RatingOptions, Votes, leaderboard, win_rate_interval
from sandbox.community import (
    Ballot,
    Community,
    ConfigurationTaste,
    vote_in_posted_duels,
)
from sandbox.emulator import DiscordEmulator
from tests.arena_factories import register_lora, save_tiny_loras
from tests.bot.conftest import bot_settings, running_bot
from tests.worker.harness import flush_broker, start_worker, worker_env

ROOT = Path(__file__).resolve().parents[2]
# Each duel costs the worker two pictures (25 denoising steps each, several seconds on a busy
# CPU): the votes come from a larger community rather than from more duels.
DUELS = 6
MEMBERS = 24  # every member votes once per duel; the last vote closes it
CHANNEL = "general"
BOOTSTRAP_ROUNDS = 1000


@pytest.fixture
async def arena(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    """The emulator, the bot (members may ask for many duels at once) and a worker with the
    tiny Stable Diffusion on the test database and Redis broker."""
    from bot.client import HpsBot

    flush_broker()
    (tmp_path / "models").mkdir()
    worker = start_worker(worker_env(pg_url, tmp_path), tmp_path / "worker.log", name="arena")
    emulator = await DiscordEmulator().start()
    settings = bot_settings(
        emulator, pg_url, tmp_path, user_jobs_per_minute=100, user_max_open_jobs=20
    )
    try:
        async with running_bot(HpsBot(settings)):
            yield {"emulator": emulator, "factory": pg_factory, "data": tmp_path}
    finally:
        await emulator.stop()
        worker.stop()


def _register_loras(
    factory: sessionmaker[Session], models_dir: Path, guild_id: int
) -> tuple[int, int]:
    """An active LoRA and a newer candidate LoRA of the guild (``/hps arena`` pits the
    candidate against the active one); their ids (candidate, active)."""
    save_tiny_loras(models_dir, "active-lora", "candidate-lora")
    with factory() as session, session.begin():
        active = register_lora(
            session, "active-lora", guild_id=guild_id, architecture="tiny-sd", activate=True
        )
        candidate = register_lora(
            session, "candidate-lora", guild_id=guild_id, architecture="tiny-sd"
        )
    return candidate, active


def _start_gate(
    factory: sessionmaker[Session], guild_id: int, channel_id: int, candidate: int
) -> int:
    """The guild's human gate on (every duel's votes needed: the decision comes when the last
    duel closes) and the candidate's run: ``DUELS`` duels scheduled in ``channel_id`` (as the
    adapt job starts it); the run's id."""
    from db.arena_gate import set_arena_settings, start_gate_run

    with factory() as session, session.begin():
        set_arena_settings(
            session,
            guild_id,
            gate_enabled=True,
            min_votes=DUELS * MEMBERS,
            duels_per_candidate=DUELS,
            votes_per_duel=MEMBERS,
            arena_channel_id=channel_id,
        )
        run = start_gate_run(
            session,
            guild_id=guild_id,
            candidate_id=candidate,
            channel_id=channel_id,
            generator="hps-sd",
            fallback_prompts=[f"a red circle, take {index}" for index in range(DUELS)],
        )
        assert run is not None
        return run.id


def _head_to_head_and_board(
    factory: sessionmaker[Session], guild_id: int, candidate: int, active: int
) -> tuple[Any, Any, Any]:
    """The guild's closed duels: the candidate's head-to-head win rate (Wilson 95%) against
    the active LoRA, and the leaderboard (Davidson, 95% bootstrap intervals), both from
    :func:`db.arena.rating_votes`; and the rated votes."""
    from db.arena import configuration_names, rating_votes
    from db.scope import Scope
    from hps.arena.ratings import head_to_head

    with factory() as session:
        votes = rating_votes(session, Scope.guild(guild_id))
        names = configuration_names(session, votes.models)
    ids = votes.models
    index = {model_id: position for position, model_id in enumerate(ids)}
    rated = Votes.create(
        [names[model_id] for model_id in ids],
        [index[model_id] for model_id in votes.model_a],
        [index[model_id] for model_id in votes.model_b],
        list(votes.outcome),
    )
    record = head_to_head(rated, names[candidate], names[active])
    rate = win_rate_interval(*record.scored())
    board = leaderboard(rated, RatingOptions(rounds=BOOTSTRAP_ROUNDS, seed=0))
    return rate, board, votes


async def _wait_closed(factory: sessionmaker[Session], expected: int) -> None:
    from sqlalchemy import func, select

    from db.models import Duel, DuelStatus

    def closed() -> int:
        with factory() as session:
            query = select(func.count()).select_from(Duel).where(Duel.status == DuelStatus.closed)
            return int(session.scalar(query) or 0)

    deadline = time.monotonic() + 30
    while (count := await asyncio.to_thread(closed)) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} of {expected} duels closed")
        await asyncio.sleep(0.1)


@dataclass
class Played:
    """What a community's arena round left: the candidate's win rate and interval, the
    leaderboard, the rated votes, the ballots, the LoRAs' ids and the gate run's outcome."""

    rate: Any
    board: Any
    votes: Any
    ballots: list[Ballot]
    candidate: int
    active: int
    gate_status: str = ""
    gate_decision: dict[str, Any] = field(default_factory=dict)
    candidate_status: str = ""


async def _play(arena: dict[str, Any], p: float) -> Played:
    """An active LoRA and a candidate, the candidate's gated run of ``DUELS`` duels, and a
    community whose members vote in each with ``ConfigurationTaste(candidate, p)``."""
    emulator: DiscordEmulator = arena["emulator"]
    factory = arena["factory"]
    guild_id = emulator.guild_id
    community = Community(emulator, seed=3, size=MEMBERS, painter=_no_painter)
    candidate, active = await asyncio.to_thread(
        _register_loras, factory, arena["data"] / "models", guild_id
    )
    run_id = await asyncio.to_thread(
        _start_gate, factory, guild_id, emulator.channels[CHANNEL], candidate
    )
    taste = ConfigurationTaste(factory, candidate, p)
    ballots = await vote_in_posted_duels(community, CHANNEL, taste, DUELS, timeout=240)
    await _wait_closed(factory, DUELS)
    rate, board, votes = _head_to_head_and_board(factory, guild_id, candidate, active)
    played = Played(rate, board, votes, ballots, candidate, active)
    _read_gate(factory, run_id, played)
    return played


def _read_gate(factory: sessionmaker[Session], run_id: int, played: Played) -> None:
    from db.models import GateRun, ModelVersion

    with factory() as session:
        run = session.get_one(GateRun, run_id)
        played.gate_status = run.status.value
        played.gate_decision = dict(run.decision or {})
        played.candidate_status = session.get_one(ModelVersion, played.candidate).status.value


def _no_painter(prompt: str, seeds: list[int]) -> list[Any]:
    raise AssertionError("the arena test's community posts no generations")


def _counted(ballots: list[Ballot]) -> None:
    """Every click was counted: recorded, and the last one of each duel closed it."""
    assert len(ballots) == DUELS * MEMBERS
    assert all(b.answer.startswith("Vote recorded:") for b in ballots), {b.answer for b in ballots}


@pytest.mark.slow
async def test_members_who_like_the_candidate_rank_it_first_and_the_gate_promotes_it(
    arena: dict[str, Any], tmp_path: Path
) -> None:
    played = await _play(arena, p=0.8)
    _counted(played.ballots)
    rate, board = played.rate, played.board
    assert len(played.votes) == DUELS * MEMBERS and played.votes.both_bad == 0
    # Deterministic (the community's seeded votes): 113 of 144 votes for the candidate,
    # win rate 0.785, Wilson 95% [0.711, 0.844].
    assert (rate.votes, round(rate.rate * rate.votes)) == (DUELS * MEMBERS, 113)
    assert rate.low > 0.5, rate  # the 95% Wilson interval of its win rate excludes 0.5
    first, second = board.models
    assert first.name == f"candidate-lora (#{played.candidate})", board.to_dict()
    assert (first.rank_low, first.rank_high) == (1, 1)
    assert first.low > second.high, board.to_dict()  # the 95% rating intervals do not overlap
    # The human gate judged the same votes: passed, and the candidate is now active.
    assert played.gate_status == "passed", played.gate_decision
    assert played.gate_decision["votes"] == DUELS * MEMBERS
    assert played.gate_decision["interval"] == [round(rate.low, 4), round(rate.high, 4)]
    assert played.candidate_status == "active"

    # The same from the command line: ``hps leaderboard --guild`` on the product's database.
    guild_id = arena["emulator"].guild_id
    shown = _cli_leaderboard(guild_id, tmp_path)
    assert [m["name"] for m in shown["models"]] == [first.name, second.name]
    assert shown["votes"] == DUELS * MEMBERS
    assert shown["models"][0]["interval"][0] > shown["models"][1]["interval"][1]


@pytest.mark.slow
async def test_a_community_that_cannot_tell_them_apart_gets_the_candidate_refused(
    arena: dict[str, Any],
) -> None:
    played = await _play(arena, p=0.5)
    _counted(played.ballots)
    rate, board = played.rate, played.board
    # Deterministic: 72 of 144 votes each way, win rate 0.5, Wilson 95% [0.419, 0.581].
    assert (rate.votes, round(rate.rate * rate.votes)) == (DUELS * MEMBERS, 72)
    assert rate.low < 0.5 < rate.high, rate  # the win rate's interval includes 0.5
    first, second = board.models
    assert first.low < second.high and second.low < first.high, board.to_dict()  # overlap
    # Every duel closed without a pass: the gate refused, the candidate stays a candidate.
    assert played.gate_status == "refused", played.gate_decision
    assert played.gate_decision["votes"] == DUELS * MEMBERS
    assert played.candidate_status == "candidate"


def _cli_leaderboard(guild_id: int, data: Path) -> dict[str, Any]:
    from tests.conftest import TEST_DATABASE_URL

    environment = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    environment.update(
        DATABASE_URL=TEST_DATABASE_URL, HPS_DATA_DIR=str(data / "cli"), PYTHONPATH=str(ROOT)
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "leaderboard", "--guild", str(guild_id),
         "--rounds", str(BOOTSTRAP_ROUNDS)],
        env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result
