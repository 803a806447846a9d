"""Issue 15's human gate end to end on the emulator, with a real worker (tiny SD): an admin turns
the gate on with ``/hps admin arena`` (arena channel, votes, duels); a LoRA candidate is
registered and its gate run started (as the adapt job does); the bot's timed rounds queue the
scheduled duels' jobs, the worker posts them in the arena channel, members click. Members who
prefer the candidate get it promoted and the decision posted with its numbers; members who
cannot tell them apart (50/50) get it refused, and ``/hps admin promote`` refuses it too."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from sandbox.emulator import DiscordEmulator
from tests.arena_factories import tiny_sd_lora
from tests.bot.helpers import admin_call, delivered_outbox, eventually

ARENA = "generations"
TIMEOUT_S = 240


@pytest.fixture(autouse=True)
def _clean_settings(pg_factory: sessionmaker[Session]) -> Iterator[None]:
    # tests/conftest.py's TRUNCATE list predates arena_settings.
    yield
    from db.models import ArenaSettings

    with pg_factory() as session, session.begin():
        session.execute(delete(ArenaSettings))


def _gate_options(**values: Any) -> list[dict[str, Any]]:
    types = {"gate": 5, "min_votes": 4, "duels": 4, "votes": 4, "channel": 7, "threshold": 10}
    options = [{"name": k, "type": types[k], "value": v} for k, v in values.items()]
    return [
        {"name": "admin", "type": 2, "options": [{"name": "arena", "type": 1, "options": options}]}
    ]


async def _private_answer(emulator: DiscordEmulator, token: str) -> str:
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.followups or record.edits), 20)
    if record.followups:
        assert record.followups[0]["flags"] & 64
        return str(record.followups[-1]["content"])
    return str(record.edits[-1])


async def _setup(
    live: dict[str, Any], factory: sessionmaker[Session], tmp_path: Path, votes: int, duels: int
) -> tuple[DiscordEmulator, int, int, int]:
    """Gate on through the command; an active LoRA, a candidate and its run. Returns
    (emulator, admin, candidate, active)."""
    from db.arena_gate import start_gate_run
    from db.registry import promote_model_version
    from db.scope import Scope

    emulator: DiscordEmulator = live["emulator"]
    guild = emulator.guild_id
    admin = emulator.add_user("mod", admin=True)
    token = await emulator.inject_slash_command(
        admin,
        "general",
        "hps",
        _gate_options(
            gate=True,
            min_votes=votes * duels - 2,
            duels=duels,
            votes=votes,
            channel=str(emulator.channels[ARENA]),
        ),
    )
    answer = await _private_answer(emulator, token)
    assert answer.startswith("Human gate on") and f"{duels} duels per candidate" in answer
    active = tiny_sd_lora(factory, tmp_path / "models", guild, "old-lora")
    candidate = tiny_sd_lora(factory, tmp_path / "models", guild, "new-lora")
    with factory() as session, session.begin():
        promote_model_version(session, active, Scope.guild(guild))
        run = start_gate_run(
            session,
            guild_id=guild,
            candidate_id=candidate,
            channel_id=emulator.channels["general"],
            generator="tiny",
            fallback_prompts=["a red lighthouse", "a green owl"],
        )
        assert run is not None
    return emulator, admin, candidate, active


async def _duel_messages(emulator: DiscordEmulator, count: int) -> list[dict[str, Any]]:
    arena = emulator.messages[emulator.channels[ARENA]]

    def posted() -> list[dict[str, Any]]:
        return [m for m in arena.values() if m.get("components")]

    await eventually(lambda: len(posted()) == count, TIMEOUT_S)
    assert not [m for m in emulator.messages[emulator.channels["general"]].values()
                if m.get("components")]  # fmt: skip
    return [copy.deepcopy(m) for m in posted()]


def _duel_of(factory: sessionmaker[Session], message: dict[str, Any]) -> tuple[int, int | None]:
    from db.models import Duel, DuelStatus

    with factory() as session:
        duel = session.scalars(select(Duel).where(Duel.message_id == int(message["id"]))).one()
        assert duel.status == DuelStatus.open and duel.requested_by is None
        assert duel.gate_run_id is not None and duel.job_id is not None
        return duel.id, duel.version_a_id


async def _vote_all(
    emulator: DiscordEmulator,
    factory: sessionmaker[Session],
    messages: list[dict[str, Any]],
    candidate: int,
    wins_per_duel: int,
    votes: int,
) -> None:
    for message in messages:
        duel_id, side_a = _duel_of(factory, message)
        mine, other = ("a", "b") if side_a == candidate else ("b", "a")
        for i in range(votes):
            user = emulator.add_user(f"m{duel_id}-{i}")
            vote = mine if i < wins_per_duel else other
            token = await emulator.click_button(user, message, f"hps:duel:{duel_id}:{vote}")
            record = emulator.interactions[token]
            await eventually(lambda record=record: bool(record.edits), 20)  # type: ignore[misc]
            assert record.edits[-1].startswith("Vote recorded")


def _status(factory: sessionmaker[Session], version_id: int) -> str:
    from db.models import ModelVersion

    with factory() as session:
        version = session.get(ModelVersion, version_id)
        assert version is not None
        return version.status.value


def _decision_posts(emulator: DiscordEmulator) -> list[dict[str, Any]]:
    arena = emulator.messages[emulator.channels[ARENA]]
    return [m for m in arena.values() if str(m.get("content", "")).startswith("Human gate:")]


async def test_members_who_prefer_the_candidate_get_it_promoted(
    live: dict[str, Any], pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from db.models import GateRun

    emulator, _admin, candidate, active = await _setup(live, pg_factory, tmp_path, votes=5, duels=2)
    messages = await _duel_messages(emulator, 2)
    assert all([a["filename"] for a in m["attachments"]] == ["A.png", "B.png"] for m in messages)
    await _vote_all(emulator, pg_factory, messages, candidate, wins_per_duel=5, votes=5)
    await eventually(lambda: len(_decision_posts(emulator)) == 1, 30)
    [post] = _decision_posts(emulator)
    decisions = await delivered_outbox(pg_factory, "gate_decision")
    assert len(decisions) == 1
    text = post["content"]
    assert f"**new-lora (#{candidate})** beat **old-lora (#{active})**" in text
    assert "is promoted" in text and "Win rate 1.00, 95% interval [0.72, 1.00], 10 votes" in text
    assert "needs 8+ votes" in text
    [sent] = [p for p in emulator.posts if p.message["id"] == post["id"]]
    assert not sent.pings.users and not sent.pings.everyone and not sent.pings.roles
    assert (_status(pg_factory, candidate), _status(pg_factory, active)) == ("active", "retired")
    with pg_factory() as session:
        run = session.scalars(select(GateRun)).one()
        assert run.status.value == "passed" and run.decision is not None


async def test_members_who_cannot_tell_refuse_and_promote_is_refused(
    live: dict[str, Any], pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from db.arena_gate import get_arena_settings

    emulator, admin, candidate, active = await _setup(live, pg_factory, tmp_path, votes=4, duels=2)
    messages = await _duel_messages(emulator, 2)
    await _vote_all(emulator, pg_factory, messages, candidate, wins_per_duel=1, votes=2)
    token = await emulator.inject_slash_command(
        admin, "general", "hps", admin_call("promote", version_id=candidate)
    )
    answer = await _private_answer(emulator, token)
    assert answer.startswith("Not promoted: this server's human gate is on")
    assert "still running, votes so far" in answer and "needs 6 votes, has 4" in answer
    await _vote_all(emulator, pg_factory, messages, candidate, wins_per_duel=1, votes=2)
    await eventually(lambda: len(_decision_posts(emulator)) == 1, 30)
    [post] = _decision_posts(emulator)
    assert f"is not promoted; **old-lora (#{active})** stays" in post["content"]
    assert "Win rate 0.50" in post["content"] and "8 votes" in post["content"]
    assert (_status(pg_factory, candidate), _status(pg_factory, active)) == ("candidate", "active")
    token = await emulator.inject_slash_command(
        admin, "general", "hps", admin_call("promote", version_id=candidate)
    )
    answer = await _private_answer(emulator, token)
    assert "arena run is refused" in answer and "win rate 0.50" in answer
    assert _status(pg_factory, candidate) == "candidate"

    # Another guild's admin: their settings are their own, A's candidate is not theirs.
    guild_b = await emulator.add_guild("B", ("b-general",))
    admin_b = emulator.add_user("b-mod", admin=True, guild_id=guild_b)
    token = await emulator.inject_slash_command(
        admin_b, "b-general", "hps", _gate_options(gate=False)
    )
    assert (await _private_answer(emulator, token)).startswith("Human gate off")
    token = await emulator.inject_slash_command(
        admin_b, "b-general", "hps", admin_call("promote", version_id=candidate)
    )
    assert "no model version" in await _private_answer(emulator, token)
    with pg_factory() as session:
        assert get_arena_settings(session, emulator.guild_id).gate_enabled
        assert not get_arena_settings(session, guild_b).gate_enabled
    assert _status(pg_factory, candidate) == "candidate"
