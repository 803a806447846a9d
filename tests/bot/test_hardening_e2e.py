"""Issue 11 against the real bot and the Discord emulator (which enforces Discord's rules):
hostile prompts ping nobody, refusals stay private, failures leak nothing, withdrawn reactions
withdraw picks, the requester is never read from the prompt, per-user limits hold under a
burst."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobs import create_job, finish_job, start_job
from db.models import Choice, Generation, Job, ModelVersion
from sandbox.emulator import DiscordEmulator, OptionRefused
from tests.bot.helpers import (
    _picked_position,
    count,
    eventually,
    png_bytes,
    post_generation,
    score_options,
)

HOSTILE = "@everyone @here <@&{role}> <@{victim}> **boom** a fox"
ONE, TWO, THREE = "1\ufe0f\u20e3", "2\ufe0f\u20e3", "3\ufe0f\u20e3"


def generate_options(prompt: str, n: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "name": "generate",
            "type": 1,
            "options": [
                {"name": "prompt", "type": 3, "value": prompt},
                {"name": "n", "type": 4, "value": n},
            ],
        }
    ]


def assert_pings_only(emulator: DiscordEmulator, message: dict[str, Any], user: int) -> None:
    [post] = [p for p in emulator.posts if p.message["id"] == message["id"]]
    assert post.pings.users == [user], post.pings
    assert not post.pings.everyone and not post.pings.roles


async def test_a_hostile_prompt_pings_nobody_but_its_requester(
    live: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = live["emulator"]
    alice, victim = emulator.add_user("alice"), emulator.add_user("victim")
    prompt = HOSTILE.format(role=emulator.guild_id, victim=victim)
    token = await emulator.inject_slash_command(
        alice, "generations", "hps", generate_options(prompt)
    )
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.public_followups), 120)
    result = record.public_followups[0]
    assert_pings_only(emulator, result, alice)
    assert "\\*\\*boom\\*\\*" in result["content"] and "@\u200beveryone" in result["content"]

    # The same prompt echoed into the channel once the token has expired: still no pings.
    general = emulator.channels["general"]
    with pg_factory() as session, session.begin():
        job = create_job(
            session,
            "rank",
            {},
            requested_by=alice,
            guild_id=emulator.guild_id,
            channel_id=general,
            interaction_token="token-long-gone",
            interaction_expires_at=datetime.now(UTC) - timedelta(minutes=1),
        )
        start_job(session, job.id)
        payload = {"prompt": prompt, "ranking": [], "model_version": {"name": "m"}}
        finish_job(session, job.id, payload, outbox_kind="rank_result")

    def in_channel() -> list[dict[str, Any]]:
        return [m for m in emulator.messages[general].values() if "ranking" in m["content"]]

    await eventually(lambda: len(in_channel()) == 1)
    assert_pings_only(emulator, in_channel()[0], alice)


async def test_prompts_are_capped_where_discord_checks_them(live: dict[str, Any]) -> None:
    emulator: DiscordEmulator = live["emulator"]
    alice = emulator.add_user("alice")
    with pytest.raises(OptionRefused):
        await emulator.inject_slash_command(
            alice, "generations", "hps", generate_options("x" * 2100)
        )
    options = score_options("y" * 501)
    with pytest.raises(OptionRefused):
        await emulator.inject_slash_command(
            alice, "general", "hps", options, attachments=[("a.png", png_bytes(), "image/png")]
        )


async def test_refusals_and_failures_are_private_and_leak_nothing(
    live: dict[str, Any], pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    emulator: DiscordEmulator = live["emulator"]
    alice = emulator.add_user("alice")
    live["bot"].settings.user_max_open_jobs = 0  # every job of hers is refused
    token = await emulator.inject_slash_command(
        alice, "generations", "hps", generate_options("a fox")
    )
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.followups))
    assert record.followups[0]["content"].startswith("Sorry: you already have 0 jobs")
    # Private on Discord: the deferral was private and the refusal became its response.
    assert record.deferred_flags & 64 and record.original is record.followups[0]
    assert record.original["flags"] & 64
    assert int(record.original["id"]) not in emulator.messages[emulator.channels["generations"]]

    # A model file missing: the user is told briefly, privately; the path stays in the job.
    live["bot"].settings.user_max_open_jobs = 3
    with pg_factory() as session:
        model = session.scalars(select(ModelVersion)).one()
    missing = tmp_path / "models" / model.checkpoint_key
    missing.rename(missing.with_suffix(".moved"))
    token = await emulator.inject_slash_command(
        alice, "general", "hps", score_options("a fox"), [("a.png", png_bytes(), "image/png")]
    )
    record = emulator.interactions[token]
    await eventually(lambda: len(record.followups) == 2, 60)
    queued, failure = record.followups
    assert record.edits[0] == "Scoring: queued" and queued["flags"] & 64
    assert failure["flags"] & 64, "a failure is for the requester's eyes only"
    assert "model's files are missing or damaged" in failure["content"]
    assert str(tmp_path) not in failure["content"] and ".safetensors" not in failure["content"]
    with pg_factory() as session:
        job = session.scalars(select(Job).where(Job.kind == "score")).one()
        assert job.error is not None and str(tmp_path) in job.error  # for the admins
    assert not [m for m in emulator.posts if str(tmp_path) in m.message["content"]]


async def test_withdrawn_reactions_withdraw_the_pick(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = world["emulator"]
    gen, alice, bob = world["generator"], world["alice"], world["bob"]
    message = await post_generation(emulator, "generations", gen, alice, "a red fox", 1)
    await eventually(lambda: count(pg_factory, Generation) == 1)

    await emulator.inject_reaction(alice, message, TWO)
    await eventually(lambda: _picked_position(pg_factory) == 1)
    await emulator.remove_reaction(alice, message, TWO)
    await eventually(lambda: count(pg_factory, Choice) == 0)

    await emulator.inject_reaction(alice, message, ONE)
    await eventually(lambda: _picked_position(pg_factory) == 0)
    await emulator.inject_reaction(alice, message, THREE)
    await eventually(lambda: _picked_position(pg_factory) == 2)  # the newest reaction
    await emulator.inject_reaction(bob, message, TWO)  # not the requester: no effect
    await emulator.remove_reaction(bob, message, TWO)
    await emulator.remove_reaction(alice, message, THREE)  # 1 remains: it is the pick
    await eventually(lambda: _picked_position(pg_factory) == 0)
    await emulator.remove_reaction_emoji(message, ONE)  # a moderator clears 1️⃣
    await eventually(lambda: count(pg_factory, Choice) == 0)

    await emulator.inject_reaction(alice, message, TWO)
    await eventually(lambda: count(pg_factory, Choice) == 1)
    await emulator.remove_all_reactions(message)
    await eventually(lambda: count(pg_factory, Choice) == 0)

    # The history backfill agrees: a pick whose reaction is gone is withdrawn.
    await emulator.inject_reaction(alice, message, THREE)
    await eventually(lambda: _picked_position(pg_factory) == 2)
    await emulator.remove_reaction(alice, message, THREE)
    await eventually(lambda: count(pg_factory, Choice) == 0)
    await emulator.inject_reaction(alice, message, ONE, dispatch=False)  # missed live
    harvest = world["bot"].get_cog("HarvestCog")
    channel = world["bot"].get_channel(emulator.channels["generations"])
    report = await harvest.backfiller.channel(channel, after=None)
    assert report.choices == 1 and _picked_position(pg_factory) == 0


async def test_the_requester_is_not_whoever_the_prompt_mentions(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = world["emulator"]
    gen, alice, bob = world["generator"], world["alice"], world["bob"]
    message = await emulator.inject_message(
        "generations",
        gen,
        f"**a portrait of <@{bob}> in oil** - <@{alice}>",
        [(f"{k}.png", png_bytes(), "image/png") for k in range(2)],
    )
    await eventually(lambda: count(pg_factory, Generation) == 1)
    with pg_factory() as session:
        assert session.scalars(select(Generation)).one().requester_id == alice
    await emulator.inject_reaction(bob, message, ONE)  # the mentioned user's reaction
    await asyncio.sleep(0.5)
    assert count(pg_factory, Choice) == 0
    await emulator.inject_reaction(alice, message, TWO)
    await eventually(lambda: _picked_position(pg_factory) == 1)


async def test_a_burst_of_commands_cannot_pass_the_limits(
    live: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = live["emulator"]
    settings = live["bot"].settings
    settings.user_jobs_per_minute, settings.user_max_open_jobs = 1, 1
    alice = emulator.add_user("alice")
    tokens = await asyncio.gather(
        *(
            emulator.inject_slash_command(
                alice, "generations", "hps", generate_options(f"fox {n}", 1)
            )
            for n in range(6)
        )
    )
    records = [emulator.interactions[t] for t in tokens]
    await eventually(lambda: all(r.followups for r in records), 30)
    with pg_factory() as session:
        assert len(session.scalars(select(Job).where(Job.requested_by == alice)).all()) == 1
    refused = [r for r in records if r.followups[0]["content"].startswith("Sorry: ")]
    assert len(refused) == 5
