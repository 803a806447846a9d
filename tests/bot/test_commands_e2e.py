"""`/hps score` end to end: emulator -> bot (defer) -> job queue -> worker -> outbox -> bot ->
follow-up in the channel. Real discord.py, PostgreSQL, Redis and a worker process."""

from __future__ import annotations

import asyncio
from typing import Any

from sandbox.emulator import DiscordEmulator
from tests.bot.helpers import eventually, png_bytes, score_options


async def test_score_an_uploaded_image(live: dict[str, Any]) -> None:
    from bot.metrics import REGISTRY

    acks = REGISTRY.get_sample_value("hps_bot_interaction_ack_seconds_count") or 0.0
    emulator: DiscordEmulator = live["emulator"]
    alice = emulator.add_user("alice")
    token = await emulator.inject_slash_command(
        alice,
        "general",
        "hps",
        score_options("a red fox"),
        attachments=[("fox.png", png_bytes(), "image/png")],
    )
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.callbacks), 5)
    assert record.callbacks == [5]  # deferred
    assert record.acknowledged_at is not None and record.acknowledged_at - record.created_at < 3.0
    assert REGISTRY.get_sample_value("hps_bot_interaction_ack_seconds_count") == acks + 1
    await eventually(lambda: bool(record.public_followups), 60)
    answer = record.public_followups[0]["content"]
    assert answer.startswith(f"<@{alice}> HPS ") and "model bot-score" in answer
    # The deferral was private; its first follow-up (the queued note) became the response.
    assert record.deferred_flags & 64 and record.original is not None
    assert record.original["flags"] & 64 and record.edits[0] == "Scoring: queued"
    [post] = [p for p in emulator.posts if p.message is record.public_followups[0]]
    assert post.pings.users == [alice] and not post.pings.everyone and not post.pings.roles


async def test_rate_limits_per_user_and_429s_waited_out(live: dict[str, Any]) -> None:
    emulator: DiscordEmulator = live["emulator"]
    live["bot"].settings.user_jobs_per_minute = 1
    bob, carol = emulator.add_user("bob"), emulator.add_user("carol")
    attachments = [("fox.png", png_bytes(), "image/png")]
    first = await emulator.inject_slash_command(
        bob, "general", "hps", score_options("a fox"), attachments=attachments
    )
    record = emulator.interactions[first]
    await eventually(lambda: record.acknowledged_at is not None)
    emulator.fail_next_with_429(2)  # the next REST calls are rate limited, then succeed
    await eventually(lambda: bool(record.public_followups), 60)
    assert record.public_followups[0]["content"].startswith(f"<@{bob}> HPS ")
    # The queued note and the result were posted: the two 429s (whichever calls met them)
    # were waited out and retried.
    assert len(record.followups) == 2 and emulator._pending_429 == 0

    second = await emulator.inject_slash_command(
        bob, "general", "hps", score_options("a fox"), attachments=attachments
    )
    await eventually(lambda: bool(emulator.interactions[second].followups))
    assert emulator.interactions[second].followups[0]["content"] == (
        "Sorry, I can't score that: that is 1 jobs in the last minute (limit 1); "
        "try again in a minute"
    )
    other = await emulator.inject_slash_command(  # the limit is per user
        carol, "general", "hps", score_options("a fox"), attachments=attachments
    )
    await eventually(lambda: bool(emulator.interactions[other].public_followups), 60)
    assert (
        emulator.interactions[other].public_followups[0]["content"].startswith(f"<@{carol}> HPS ")
    )


async def test_a_non_image_gets_a_short_private_answer(live: dict[str, Any]) -> None:
    emulator: DiscordEmulator = live["emulator"]
    token = await emulator.inject_slash_command(
        emulator.add_user("bob"),
        "general",
        "hps",
        score_options("x"),
        attachments=[("notes.png", b"not an image at all" * 10, "image/png")],
    )
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.followups), 20)
    reply = record.followups[0]
    assert reply["flags"] & 64
    assert reply["content"].startswith("Sorry, I can't score that: not a recognised image")


async def test_generate_then_pick_with_buttons_that_survive_a_restart(
    live: dict[str, Any], pg_factory: Any
) -> None:
    from sqlalchemy import select

    from bot.client import HpsBot
    from db.models import Choice, Generation
    from tests.bot.helpers import _picked_position, count

    emulator: DiscordEmulator = live["emulator"]
    alice, bob = emulator.add_user("alice"), emulator.add_user("bob")
    live["bot"].settings.user_max_open_jobs = 1
    generate = [
        {
            "name": "generate",
            "type": 1,
            "options": [
                {"name": "prompt", "type": 3, "value": "a red fox"},
                {"name": "n", "type": 4, "value": 2},
            ],
        }
    ]
    token = await emulator.inject_slash_command(alice, "generations", "hps", generate)
    record = emulator.interactions[token]
    await eventually(lambda: record.acknowledged_at is not None)
    await asyncio.sleep(0.5)  # the job row exists once the command has submitted it
    again = await emulator.inject_slash_command(alice, "generations", "hps", generate)
    await eventually(lambda: bool(emulator.interactions[again].followups))
    refusal = emulator.interactions[again].followups[0]
    assert refusal["flags"] & 64
    assert refusal["content"] == (
        "Sorry: you already have 1 jobs waiting or running; try again when one has finished"
    )
    await eventually(lambda: bool(record.public_followups), 120)
    posted = record.public_followups[0]
    # While it ran, the response showed its progress; then it pointed at the result.
    assert any(edit.startswith("Generating: ") and "% — 2 images" in edit for edit in record.edits)
    await eventually(lambda: record.edits[-1] == "Generating: done, the result is posted below.")
    assert len(posted["attachments"]) == 2
    buttons = posted["components"][0]["components"]
    assert [b["custom_id"] for b in buttons] == ["hps:pick:0", "hps:pick:1"]
    await eventually(lambda: count(pg_factory, Generation) == 1)
    with pg_factory() as session:
        generation = session.scalars(select(Generation)).one()
        assert generation.source_message_id == int(posted["id"])
        assert generation.requester_id == alice and generation.generator == "hps-sd"
        assert all(image.seed is not None for image in generation.images)

    click = await emulator.click_button(bob, posted, "hps:pick:1")
    await eventually(lambda: _picked_position(pg_factory) == 1)
    record = emulator.interactions[click]
    assert record.callbacks == [5] and record.deferred_flags & 64  # private, deferred at once
    await eventually(lambda: bool(record.edits))
    assert record.edits[-1].startswith("Recorded your pick: image #2")
    await emulator.click_button(bob, posted, "hps:pick:0")  # a second click changes it
    await eventually(lambda: _picked_position(pg_factory) == 0)
    assert count(pg_factory, Choice) == 1

    # The bot restarts: the old buttons still record picks.
    await live["bot"].close()
    restarted = HpsBot(live["settings"])
    runner = asyncio.create_task(restarted.start("t"))
    try:
        await asyncio.wait_for(restarted.wait_until_ready(), 20)
        carol = emulator.add_user("carol")
        click = await emulator.click_button(carol, posted, "hps:pick:1")
        await eventually(lambda: count(pg_factory, Choice) == 2)
        assert emulator.interactions[click].callbacks == [5]
    finally:
        await restarted.close()
        await asyncio.wait_for(runner, 10)


async def test_rank_and_regenerate_a_harvested_generation(
    live: dict[str, Any], pg_factory: Any
) -> None:
    from db.channels import enable_channel
    from tests.bot.helpers import count, png

    emulator: DiscordEmulator = live["emulator"]
    with pg_factory() as session, session.begin():
        enable_channel(
            session, emulator.guild_id, emulator.channels["generations"], "multi_attachment"
        )
    generator, alice = emulator.add_user("gen", bot=True), emulator.add_user("alice")
    message = await emulator.inject_message(
        "generations",
        generator,
        f"**a quiet harbour** <@{alice}>",
        [(f"{i}.png", png((40 * i, 90, 200 - 40 * i)), "image/png") for i in range(3)],
    )
    from db.models import Generation

    await eventually(lambda: count(pg_factory, Generation) == 1, 20)
    link = (
        f"https://discord.com/channels/{emulator.guild_id}/{message['channel_id']}/{message['id']}"
    )
    token = await emulator.inject_slash_command(
        alice,
        "generations",
        "hps",
        [{"name": "rank", "type": 1, "options": [{"name": "message", "type": 3, "value": link}]}],
    )
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.public_followups), 60)
    assert record.public_followups[0]["content"].startswith(
        f"<@{alice}> ranking of **a quiet harbour** by HPS (bot-score): #"
    )

    token = await emulator.inject_slash_command(
        alice,
        "generations",
        "hps",
        [
            {
                "name": "regenerate",
                "type": 1,
                "options": [
                    {"name": "message", "type": 3, "value": message["id"]},
                    {"name": "n", "type": 4, "value": 2},
                ],
            }
        ],
    )
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.public_followups), 120)
    answer = record.public_followups[0]
    assert "**a quiet harbour** regenerated (best of 2): HPS" in answer["content"]
    assert "vs best original" in answer["content"]
    assert answer["attachments"][0]["filename"] == "regenerated.png"

    token = await emulator.inject_slash_command(
        alice,
        "generations",
        "hps",
        [
            {
                "name": "rank",
                "type": 1,
                "options": [{"name": "message", "type": 3, "value": "12345"}],
            }
        ],
    )
    await eventually(lambda: bool(emulator.interactions[token].followups), 20)
    assert emulator.interactions[token].followups[0]["content"].startswith("I have no generation")


async def test_admin_stats_and_export_post_their_reports(
    live: dict[str, Any], pg_factory: Any
) -> None:
    """The default-queue jobs of issue 7 through the bot: charts and the export's card come
    back into the channel as files."""
    from db.models import Choice
    from tests.bot.helpers import admin_call, count, post_generation

    emulator: DiscordEmulator = live["emulator"]
    from db.channels import enable_channel

    with pg_factory() as session, session.begin():
        enable_channel(
            session, emulator.guild_id, emulator.channels["generations"], "multi_attachment"
        )
    generator, admin = emulator.add_user("Gen", bot=True), emulator.add_user("mod", admin=True)
    users = [emulator.add_user(f"u{n}") for n in range(3)]
    for n, user in enumerate(users):
        message = await post_generation(emulator, "generations", generator, user, f"p{n}", n)
        await emulator.inject_reaction(user, message, "1\ufe0f\u20e3")
    await eventually(lambda: count(pg_factory, Choice) == 3)

    stats = emulator.interactions[
        await emulator.inject_slash_command(admin, "general", "hps", admin_call("stats"))
    ]
    await eventually(lambda: bool(stats.public_followups), 120)
    report = stats.public_followups[0]
    names = [a["filename"] for a in report["attachments"]]
    assert names and all(name.endswith(".png") for name in names)
    assert stats.edits[0].startswith("The dataset holds 3 generations")

    export = emulator.interactions[
        await emulator.inject_slash_command(admin, "general", "hps", admin_call("export"))
    ]
    await eventually(lambda: bool(export.public_followups), 120)
    card = export.public_followups[0]
    assert [a["filename"] for a in card["attachments"]] == ["histogram.png"]
    assert "Dataset exported: 3 choices by 3 users on 3 prompts" in card["content"]


async def test_commands_are_acknowledged_while_the_database_is_stuck(
    live: dict[str, Any], pg_url: str
) -> None:
    """Defer comes first: a command is acknowledged within Discord's 3 s even when the jobs
    table is locked, and its answer follows once the database is back."""
    import psycopg

    from tests.conftest import libpq_dsn

    emulator: DiscordEmulator = live["emulator"]
    alice = emulator.add_user("alice")
    blocker = await psycopg.AsyncConnection.connect(libpq_dsn(pg_url))
    try:
        await blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")  # held until rollback
        token = await emulator.inject_slash_command(
            alice,
            "general",
            "hps",
            score_options("a fox"),
            attachments=[("fox.png", png_bytes(), "image/png")],
        )
        record = emulator.interactions[token]
        await eventually(lambda: record.acknowledged_at is not None, 3)
        assert record.acknowledged_at is not None
        assert record.acknowledged_at - record.created_at < 3.0
        await asyncio.sleep(2)
        assert not record.followups  # still waiting for the database
    finally:
        await blocker.rollback()
        await blocker.close()
    await eventually(lambda: bool(record.public_followups), 60)
    assert record.public_followups[0]["content"].startswith(f"<@{alice}> HPS ")
