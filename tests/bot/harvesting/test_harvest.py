"""The bot harvests a generator's multi-image messages and the requester's number-emoji pick,
over a real discord.py connection to the emulator, into the real test PostgreSQL."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.client import HpsBot
from bot.downloads import DownloadRefused, check_url
from db.channels import enable_channel
from db.models import Choice, Generation
from db.models import Image as ImageRow
from db.privacy import opt_out
from sandbox.emulator import DiscordEmulator, OptionRefused
from tests.bot.helpers import _picked_position, admin_call, count, eventually, png, post_generation


async def test_generation_pick_replay_and_deletion(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    from bot.metrics import REGISTRY

    def metric(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    ingested = metric("hps_bot_events_ingested_total", adapter="multi_attachment")
    reactions = metric("hps_bot_choices_recorded_total", how="reaction")
    emulator: DiscordEmulator = world["emulator"]
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    message = await emulator.inject_message(
        "generations",
        world["generator"],
        f"**a red fox in the snow** - <@{world['alice']}>",
        [(f"{i}.png", png(c), "image/png") for i, c in enumerate(colors)],
    )
    await eventually(lambda: count(pg_factory, Generation) == 1)
    with pg_factory() as session:
        generation = session.scalars(select(Generation)).one()
        assert generation.prompt.text == "a red fox in the snow"
        assert generation.requester_id == world["alice"]
        shas = [image.sha256 for image in generation.images]
    assert len(shas) == 4 and all(world["store"].exists(sha) for sha in shas)

    await emulator.dispatch("MESSAGE_CREATE", message)  # a replayed event
    await emulator.inject_reaction(world["alice"], message, "3\ufe0f\u20e3")
    await eventually(lambda: count(pg_factory, Choice) == 1)
    await emulator.inject_reaction(world["bob"], message, "2\ufe0f\u20e3")  # not the requester
    await emulator.inject_reaction(world["alice"], message, "1\ufe0f\u20e3")  # changed her mind
    position_of_pick = lambda: _picked_position(pg_factory)  # noqa: E731
    await eventually(lambda: position_of_pick() == 0)
    assert count(pg_factory, Generation) == 1 and count(pg_factory, Choice) == 1
    # The replay was not counted again; both of alice's picks were (the second replaced).
    assert metric("hps_bot_events_ingested_total", adapter="multi_attachment") == ingested + 1
    assert metric("hps_bot_choices_recorded_total", how="reaction") == reactions + 2

    await emulator.delete_message(message)
    await eventually(lambda: count(pg_factory, Generation) == 0)
    await eventually(lambda: not any(world["store"].exists(sha) for sha in shas))
    assert count(pg_factory, ImageRow) == 0 and count(pg_factory, Choice) == 0


async def test_bad_attachments_and_opted_out_users_store_nothing(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = world["emulator"]
    generator, alice = world["generator"], world["alice"]
    await emulator.inject_message(  # one "image" is text renamed .png
        "generations",
        generator,
        f"**broken** <@{alice}>",
        [("a.png", png((1, 2, 3)), "image/png"), ("b.png", b"just text" * 20, "image/png")],
    )
    await emulator.inject_message(  # 300 kB of noise, over the 200 kB limit
        "generations",
        generator,
        f"**huge** <@{alice}>",
        [
            ("a.png", png((1, 2, 3)), "image/png"),
            ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(300_000), "image/png"),
        ],
    )
    with pg_factory() as session, session.begin():
        opt_out(session, world["bob"])
    await emulator.inject_message(
        "generations",
        generator,
        f"**private** <@{world['bob']}>",
        [("a.png", png((9, 9, 9)), "image/png"), ("b.png", png((8, 8, 8)), "image/png")],
    )
    await emulator.inject_message(  # a good one afterwards: the bot kept running
        "generations",
        generator,
        f"**fine** <@{alice}>",
        [("a.png", png((5, 5, 5)), "image/png"), ("b.png", png((6, 6, 6)), "image/png")],
    )
    await eventually(lambda: count(pg_factory, Generation) == 1)
    await asyncio.sleep(0.5)
    with pg_factory() as session:
        assert [g.prompt.text for g in session.scalars(select(Generation))] == ["fine"]
    stored = [p for p in world["store"].root.rglob("*.png") if "inputs" not in p.parts]
    assert len(stored) == 2  # only the good generation's two images
    # ... each with its model input (MODEL_INPUTS, default pad:224), made at intake
    inputs = [p for p in world["store"].root.rglob("inputs/**/*.png")]
    assert sorted(p.name for p in inputs) == ["pad-224.png", "pad-224.png"]


def test_urls_outside_the_allowlist_are_refused() -> None:
    allowed = ["cdn.discordapp.com", "media.discordapp.net"]
    check_url("https://cdn.discordapp.com/attachments/1/2/a.png", allowed)
    with pytest.raises(DownloadRefused, match=r"evil\.example: not an allowed CDN host"):
        check_url("https://evil.example/a.png", allowed)
    with pytest.raises(DownloadRefused, match="only https"):
        check_url("http://cdn.discordapp.com/a.png", allowed)
    with pytest.raises(DownloadRefused, match=r"127\.0\.0\.1:80: not an allowed"):
        check_url("https://127.0.0.1:80/a.png", allowed)


async def test_midjourney_grid_and_upscale(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = world["emulator"]
    with pg_factory() as session, session.begin():
        enable_channel(session, emulator.guild_id, emulator.channels["midjourney"], "midjourney")
    world["bot"].get_cog("HarvestCog").forget_channel_config()
    grid = Image.new("RGB", (128, 128))
    for index, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        grid.paste(
            color,
            ((index % 2) * 64, (index // 2) * 64, (index % 2 + 1) * 64, (index // 2 + 1) * 64),
        )
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    alice, midjourney = world["alice"], world["generator"]
    buttons = [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 2, "label": f"U{n}", "custom_id": f"MJ::JOB::upsample::{n}::x"}
                for n in range(1, 5)
            ],
        }
    ]
    message = await emulator.inject_message(
        "midjourney",
        midjourney,
        f"**a lighthouse at night --ar 1:1** - <@{alice}> (fast)",
        [("grid.png", buffer.getvalue(), "image/png")],
        components=buttons,
    )
    await eventually(lambda: count(pg_factory, Generation) == 1)
    with pg_factory() as session:
        generation = session.scalars(select(Generation)).one()
        assert generation.prompt.text == "a lighthouse at night --ar 1:1"
        assert [(i.width, i.height) for i in generation.images] == [(64, 64)] * 4
        top_right = world["store"].get(generation.images[1].sha256)
    assert Image.open(io.BytesIO(top_right)).getpixel((5, 5)) == (0, 255, 0)

    upscale = await emulator.inject_message(
        "midjourney",
        midjourney,
        f"**a lighthouse at night --ar 1:1** - Image #3 <@{alice}>",
        [("up.png", png((0, 0, 255), 128), "image/png")],
        reply_to=message,
    )
    await eventually(lambda: _picked_position(pg_factory) == 2)
    assert count(pg_factory, Generation) == 1  # the upscale is a choice, not a generation
    await emulator.delete_message(upscale)  # deleting the upscale withdraws the pick
    await eventually(lambda: count(pg_factory, Choice) == 0)
    assert count(pg_factory, Generation) == 1


async def test_forget_me_deletes_everything_and_stops_harvesting(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = world["emulator"]
    alice = world["alice"]
    message = await emulator.inject_message(
        "generations",
        world["generator"],
        f"**mine** <@{alice}>",
        [("a.png", png((10, 20, 30)), "image/png"), ("b.png", png((30, 20, 10)), "image/png")],
    )
    await eventually(lambda: count(pg_factory, Generation) == 1)
    await emulator.inject_reaction(alice, message, "2\ufe0f\u20e3")
    await eventually(lambda: count(pg_factory, Choice) == 1)

    token = await emulator.inject_slash_command(
        alice,
        "general",
        "hps",
        [{"name": "privacy", "type": 2, "options": [{"name": "forget-me", "type": 1}]}],
    )
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.followups))
    assert record.followups[0]["content"].startswith(
        "Done: your generations, picks and jobs are deleted (2 images"
    )
    assert count(pg_factory, Generation) == 0 and count(pg_factory, Choice) == 0
    assert [p for p in world["store"].root.rglob("*.png")] == []

    await emulator.inject_message(  # still opted out: not stored
        "generations",
        world["generator"],
        f"**again** <@{alice}>",
        [("a.png", png((1, 1, 1)), "image/png"), ("b.png", png((2, 2, 2)), "image/png")],
    )
    await asyncio.sleep(1.0)
    assert count(pg_factory, Generation) == 0


async def test_admin_commands_are_checked_server_side(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    from db.channels import harvest_adapter

    emulator: DiscordEmulator = world["emulator"]
    general = emulator.channels["general"]
    calls = [
        admin_call("channels", channel=str(general), adapter="multi_attachment"),
        admin_call("stats"),
        admin_call("promote", version_id=1),
        admin_call("train"),
        admin_call("backfill", channel=str(general), from_start=True),
        admin_call("adapt", prompts=10),
        admin_call("export"),
    ]
    for options in calls:
        token = await emulator.inject_slash_command(world["bob"], "general", "hps", options)
        record = emulator.interactions[token]
        await eventually(lambda record=record: bool(record.followups))
        reply = record.followups[0]
        assert (
            reply["content"] == "Only server admins can use this command." and reply["flags"] & 64
        )
    with pg_factory() as session:
        assert harvest_adapter(session, general) is None

    admin = emulator.add_user("mod", admin=True)
    token = await emulator.inject_slash_command(admin, "general", "hps", calls[0])
    await eventually(lambda: bool(emulator.interactions[token].followups))
    assert emulator.interactions[token].followups[0]["content"].startswith("Harvesting <#")
    with pg_factory() as session:
        assert harvest_adapter(session, general) == "multi_attachment"
    # The adapter option's choices are the registry's: Discord refuses any other value.
    forged = admin_call("channels", channel=str(general), adapter="../../etc")
    with pytest.raises(OptionRefused, match="not one of its choices"):
        await emulator.inject_slash_command(admin, "general", "hps", forged)
    with pg_factory() as session:
        assert harvest_adapter(session, general) == "multi_attachment"
    await emulator.inject_message(
        "general",
        world["generator"],
        f"**now harvested** <@{world['alice']}>",
        [("a.png", png((1, 2, 3)), "image/png"), ("b.png", png((3, 2, 1)), "image/png")],
    )
    await eventually(lambda: count(pg_factory, Generation) == 1)
    token = await emulator.inject_slash_command(admin, "general", "hps", calls[1])
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.edits))
    assert record.edits[-1].startswith("The dataset holds 1 generations, 2 images, 0 choices")
    assert record.original is not None and record.original["flags"] & 64  # ephemeral


async def test_after_a_re_identify_the_history_backfill_recovers_missed_messages(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = world["emulator"]
    bot: HpsBot = world["bot"]
    cog = bot.get_cog("HarvestCog")
    gen, alice = world["generator"], world["alice"]
    first = await post_generation(emulator, "generations", gen, alice, "seen live", 1)
    await eventually(lambda: count(pg_factory, Generation) == 1)
    await cog.flush_last_seen()  # what the periodic flush does every few seconds

    # Discord refuses to resume: the bot must IDENTIFY again, and the events dispatched
    # meanwhile are never delivered to it.
    await emulator.invalidate_sessions()
    missed = [
        await post_generation(emulator, "generations", gen, alice, f"missed {n}", 10 + n)
        for n in range(3)
    ]
    await emulator.inject_reaction(alice, missed[1], "2\ufe0f\u20e3")
    await emulator.inject_reaction(world["bob"], missed[2], "1\ufe0f\u20e3")  # not the requester
    assert not any(session.connected for session in emulator.sessions.values())

    await eventually(lambda: count(pg_factory, Generation) == 4, timeout=30)
    reports = await cog.backfiller.wait_for_catch_up()
    assert [(r.generations, r.choices) for r in reports] == [(3, 1)]
    with pg_factory() as session:
        prompts = sorted(g.prompt.text for g in session.scalars(select(Generation)))
        choice = session.scalars(select(Choice)).one()
    assert prompts == ["missed 0", "missed 1", "missed 2", "seen live"]
    assert choice.user_id == alice and _picked_position(pg_factory) == 1
    # Only messages after the last seen one were read, and nothing was downloaded twice.
    downloads = [c for c in emulator.calls if c.method == "GET" and "/cdn/" in c.path]
    assert downloads == []  # the CDN is not part of the REST call log
    assert int(first["id"]) < min(int(m["id"]) for m in missed)
    with pg_factory() as session:
        from db.channels import last_seen_message

        await cog.flush_last_seen()
        assert last_seen_message(session, emulator.channels["generations"]) == int(missed[-1]["id"])


async def test_admin_backfill_reads_a_channels_history_with_progress(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = world["emulator"]
    gen, alice = world["generator"], world["alice"]
    # History from before the bot was here: 120 messages, 2 pages of history. (Not dispatched:
    # live events for them could still be in flight when the channel is enabled below, and
    # would harvest them before the backfill does.)
    for n in range(118):
        await emulator.inject_message("general", alice, f"chatter {n}", dispatch=False)
    first = await post_generation(emulator, "general", gen, alice, "old one", 3, dispatch=False)
    await post_generation(emulator, "general", gen, world["bob"], "old two", 4, dispatch=False)
    await emulator.inject_reaction(alice, first, "3\ufe0f\u20e3", dispatch=False)
    admin = emulator.add_user("mod", admin=True)
    general = emulator.channels["general"]
    token = await emulator.inject_slash_command(
        admin, "general", "hps", admin_call("backfill", channel=str(general))
    )
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.edits))
    assert "is not harvested" in record.edits[-1]

    with pg_factory() as session, session.begin():
        enable_channel(session, emulator.guild_id, general, "multi_attachment")
    world["bot"].get_cog("HarvestCog").forget_channel_config()
    token = await emulator.inject_slash_command(
        admin, "general", "hps", admin_call("backfill", channel=str(general))
    )
    record = emulator.interactions[token]
    await eventually(lambda: any("finished" in edit for edit in record.edits), timeout=30)
    assert record.edits[-1] == (
        f"backfill of <#{general}> finished: 120 messages read, 2 new generations, "
        "1 picks, 0 already stored, 0 refused"
    )
    assert count(pg_factory, Generation) == 2 and count(pg_factory, Choice) == 1
    assert _picked_position(pg_factory) == 2
    history_pages = [c for c in emulator.calls_to("GET", f"/channels/{general}/messages")]
    assert len([c for c in history_pages if c.path.endswith("/messages")]) >= 2

    # Again from the start: everything is known, nothing is stored twice.
    token = await emulator.inject_slash_command(
        admin, "general", "hps", admin_call("backfill", channel=str(general), from_start=True)
    )
    record = emulator.interactions[token]
    await eventually(lambda: any("finished" in edit for edit in record.edits), timeout=30)
    assert "0 new generations, 1 picks, 2 already stored" in record.edits[-1]
    assert count(pg_factory, Generation) == 2 and count(pg_factory, Choice) == 1


async def test_a_purge_deletes_the_data_of_every_purged_message(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = world["emulator"]
    gen, alice = world["generator"], world["alice"]
    posted = [
        await post_generation(emulator, "generations", gen, alice, f"purged {n}", 20 + n)
        for n in range(3)
    ]
    await eventually(lambda: count(pg_factory, Generation) == 3)
    await emulator.bulk_delete(posted[:2])
    await eventually(lambda: count(pg_factory, Generation) == 1)
    with pg_factory() as session:
        assert session.scalars(select(Generation)).one().prompt.text == "purged 2"
    # The blobs (and their model inputs) go after the rows' transaction has committed: the
    # survivor's images only.
    await eventually(lambda: len(list(world["store"].root.rglob("*.png"))) == 6)
    assert len(list(world["store"].root.rglob("inputs/**/*.png"))) == 3


async def test_results_go_to_the_channel_once_the_interaction_token_expired(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    from datetime import UTC, datetime, timedelta

    from db.jobs import create_job, finish_job, start_job

    emulator: DiscordEmulator = world["emulator"]
    general = emulator.channels["general"]
    with pg_factory() as session, session.begin():
        job = create_job(
            session,
            "score",
            {"prompt": "a fox"},
            requested_by=world["alice"],
            guild_id=emulator.guild_id,
            channel_id=general,
            interaction_token="token-long-gone",
            interaction_expires_at=datetime.now(UTC) - timedelta(minutes=1),
        )
        start_job(session, job.id)
        result = {"scores": [{"score": 21.5, "percentile": 80.0}], "model_version": {"name": "m"}}
        finish_job(session, job.id, result, outbox_kind="score_result")

    def posted() -> list[dict[str, Any]]:
        return [m for m in emulator.messages[general].values() if "HPS 21.50" in m["content"]]

    await eventually(lambda: len(posted()) == 1)
    assert posted()[0]["content"].startswith(f"<@{world['alice']}> HPS 21.50 (better than 80%")
    assert emulator.calls_to("POST", "/webhooks/") == []  # the expired token was not used
    await asyncio.sleep(1.0)
    assert len(posted()) == 1  # exactly once


async def test_model_labels_in_alt_text_reach_the_ratings(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    """A generator's message naming each image's model in its alt text (Discord's attachment
    ``description``): alice's pick is a win of the picked model over the other one."""
    from db.leaderboards import guild_rating_votes

    emulator: DiscordEmulator = world["emulator"]
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    models = ["sdxl", "sdxl", "sd-1.5", "sd-1.5"]
    message = await emulator.inject_message(
        "generations",
        world["generator"],
        f"**a red fox in the snow** - <@{world['alice']}>",
        [
            (f"{i}.png", png(c), "image/png", f"model: {m}")
            for i, (c, m) in enumerate(zip(colors, models, strict=True))
        ],
    )
    await eventually(lambda: count(pg_factory, Generation) == 1)
    with pg_factory() as session:
        generation = session.scalars(select(Generation)).one()
        assert generation.params["image_models"] == models
    await emulator.inject_reaction(world["alice"], message, "3\ufe0f\u20e3")  # an sd-1.5 image
    await eventually(lambda: count(pg_factory, Choice) == 1)
    with pg_factory() as session:
        votes, names = guild_rating_votes(session, emulator.guild_id)
    assert len(votes) == 1 and sorted(names[m] for m in votes.models) == ["sd-1.5", "sdxl"]
    winner = votes.model_a[0] if votes.outcome[0] == 1.0 else votes.model_b[0]
    assert names[winner] == "sd-1.5"
