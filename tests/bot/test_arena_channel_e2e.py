"""Issue 15's arena channel, end to end on the emulator: a member's message in the channel an
admin named with ``/hps admin arena channel:`` becomes a duel (worker, outbox, the posted A/B
message), exactly once whatever the gateway replays; bots, other channels, non-prompts and
members who may not be stored get none; a guild with nothing to compare and a member at their
job limit get one quiet reply that pings nobody; each guild's arena channel is its own."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.arena_channel import (
    MAX_PROMPT_CHARS,
    ArenaChannelCog,
    ChannelOutcome,
    arena_channel_cog,
    duel_job_id,
)
from sandbox.emulator import DiscordEmulator
from tests.arena_factories import register_lora, tiny_sd_lora
from tests.bot.helpers import admin_call, count, eventually, png

UNRESOLVABLE = "Sorry, something went wrong on my side; the admins can find it in the logs."


def _cog(bot: Any) -> ArenaChannelCog:
    cog = arena_channel_cog(bot)
    assert cog is not None
    return cog


async def _outcome(bot: Any, message: dict[str, Any], timeout: float = 20) -> ChannelOutcome:
    """What the bot made of ``message`` (waits until it has decided)."""
    cog, message_id = _cog(bot), int(message["id"])
    await eventually(lambda: message_id in cog.outcomes, timeout)
    return cog.outcomes[message_id]


def _row_lora(factory: sessionmaker[Session], guild_id: int, name: str = "guild-lora") -> int:
    """An active LoRA row of ``guild_id`` (no checkpoint: for tests without a worker)."""
    with factory() as session, session.begin():
        return register_lora(
            session, name, guild_id=guild_id, architecture="tiny-sd", activate=True
        )


def _set_arena_channel(factory: sessionmaker[Session], guild_id: int, channel_id: int) -> None:
    from db.arena_gate import set_arena_settings

    with factory() as session, session.begin():
        set_arena_settings(session, guild_id, arena_channel_id=channel_id)


async def _private_answer(emulator: DiscordEmulator, token: str) -> str:
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.followups or record.edits), 20)
    return str(record.followups[-1]["content"] if record.followups else record.edits[-1])


def _replies_to(emulator: DiscordEmulator, message: dict[str, Any]) -> list[dict[str, Any]]:
    """The bodies of the bot's posts that reply to ``message``."""
    path = f"/channels/{message['channel_id']}/messages"
    return [
        call.body
        for call in emulator.calls_to("POST", path)
        if str(((call.body or {}).get("message_reference") or {}).get("message_id"))
        == message["id"]
    ]


def _notes(emulator: DiscordEmulator, channel: str) -> list[Any]:
    """The bot's own posts in ``channel`` without buttons (not duels, not answers to a
    command)."""
    channel_id = str(emulator.channels[channel])
    return [
        p
        for p in emulator.posts
        if p.via == "channel"
        and p.message["channel_id"] == channel_id
        and not p.message.get("components")
    ]


def _assert_pings_nobody(post: Any) -> None:
    assert not post.pings.users and not post.pings.everyone and not post.pings.roles
    assert post.allowed_mentions is not None and post.allowed_mentions.get("parse") == []


def test_the_prompt_limit_is_the_commands() -> None:
    from bot.cogs.commands import MAX_PROMPT_CHARS as COMMAND_LIMIT

    assert MAX_PROMPT_CHARS == COMMAND_LIMIT


async def test_a_message_in_the_arena_channel_duels_once(
    live: dict[str, Any], pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from db.models import Duel, Job

    emulator: DiscordEmulator = live["emulator"]
    bot = live["bot"]
    lora_id = tiny_sd_lora(
        pg_factory, tmp_path / "models", emulator.guild_id, "community-lora",
        folder="duel-test", activate=True,
    )  # fmt: skip
    admin, alice = emulator.add_user("admin", admin=True), emulator.add_user("alice")
    general = emulator.channels["general"]

    # Before the admin names the channel: a plain message (the cache now says "none").
    before = await emulator.inject_message("general", alice, "a fox before the arena opened")
    assert await _outcome(bot, before) is ChannelOutcome.ignored
    token = await emulator.inject_slash_command(
        admin, "general", "hps", admin_call("arena", channel=str(general))
    )
    assert f"posted in <#{general}>" in await _private_answer(emulator, token)

    # At once (no TTL wait): the command dropped this process's cached channel.
    message = await emulator.inject_message("general", alice, "  a red fox in the snow ")
    assert await _outcome(bot, message) is ChannelOutcome.duel
    channel = emulator.messages[general]

    def duels_posted() -> list[dict[str, Any]]:
        return [m for m in channel.values() if m.get("components")]

    await eventually(lambda: len(duels_posted()) == 1, 120)
    [posted] = duels_posted()
    assert "a red fox in the snow" in posted["content"]
    assert [a["filename"] for a in posted["attachments"]] == ["A.png", "B.png"]
    [post] = [p for p in emulator.posts if p.message["id"] == posted["id"]]
    _assert_pings_nobody(post)
    with pg_factory() as session:
        duel = session.scalars(select(Duel)).one()
        assert (duel.guild_id, duel.channel_id, duel.requested_by) == (
            emulator.guild_id,
            general,
            alice,
        )
        assert {duel.version_a_id, duel.version_b_id} == {lora_id, None}
        assert duel.params["source_message_id"] == int(message["id"])
        assert duel.job_id == duel_job_id(int(message["id"]))
        assert session.get_one(Job, duel.job_id).requested_by == alice

    # The gateway replays the message, the author edits it, and a replay reaches a process
    # that has never seen it (its memory cleared): still one duel, no reply.
    await emulator.dispatch("MESSAGE_CREATE", copy.deepcopy(message))
    edited = {
        **copy.deepcopy(message),
        "content": "a blue fox",
        "edited_timestamp": datetime.now(UTC).isoformat(),
    }
    await emulator.dispatch("MESSAGE_UPDATE", edited)
    await eventually(lambda: _cog(bot).outcomes.get(int(message["id"])) is ChannelOutcome.duel)
    _cog(bot).outcomes.clear()
    await emulator.dispatch("MESSAGE_CREATE", copy.deepcopy(message))
    assert await _outcome(bot, message) is ChannelOutcome.duplicate
    assert count(pg_factory, Duel) == 1 and count(pg_factory, Job, Job.kind == "duel") == 1
    assert len(duels_posted()) == 1 and not _notes(emulator, "general")
    assert _cog(bot).channels.queries == 2  # once before the command, once after it


async def test_only_members_prompts_in_the_arena_channel_duel(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    from db.models import Duel
    from db.privacy import opt_out

    emulator: DiscordEmulator = world["emulator"]
    bot, alice, robot = world["bot"], world["alice"], world["generator"]
    mallory = emulator.add_user("mallory")
    with pg_factory() as session, session.begin():
        opt_out(session, mallory)
    _row_lora(pg_factory, emulator.guild_id)
    _set_arena_channel(pg_factory, emulator.guild_id, emulator.channels["general"])

    first = await emulator.inject_message("general", alice, "a cat")
    ignored = [
        await emulator.inject_message("general", robot, "a bot's prompt"),
        await emulator.inject_message("generations", alice, "a prompt in another channel"),
        await emulator.inject_message("general", alice, "a reply's prompt", reply_to=first),
        await emulator.inject_message(
            "general", alice, "", [("x.png", png((1, 2, 3)), "image/png")]
        ),
        await emulator.inject_message("general", alice, "x" * (MAX_PROMPT_CHARS + 1)),
        await emulator.inject_message("general", alice, "   "),
        await emulator.inject_message("general", alice, "/hps arena a typed command"),
        await emulator.inject_message("general", alice, f"<@{emulator.bot_user['id']}> draw a fox"),
    ]
    for message in ignored:
        assert await _outcome(bot, message) is ChannelOutcome.ignored, message["content"]
    assert await _outcome(bot, first) is ChannelOutcome.duel

    refused = await emulator.inject_message("general", mallory, "an opted-out prompt")
    assert await _outcome(bot, refused) is ChannelOutcome.opted_out
    [note] = _replies_to(emulator, refused)  # posted before the outcome was recorded
    assert "opted out" in note["content"]
    notes = _notes(emulator, "general")
    assert len(notes) == 1, [p.message["content"] for p in notes]
    [posted_note] = notes
    assert posted_note.message["content"] == note["content"]
    _assert_pings_nobody(posted_note)

    with pg_factory() as session:
        assert [d.params["source_message_id"] for d in session.scalars(select(Duel))] == [
            int(first["id"])
        ]
    # Eleven messages in two channels of one guild: one settings query.
    assert _cog(bot).channels.queries == 1


async def test_no_lora_and_the_job_limit_get_a_quiet_note(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    from db.jobs import create_job
    from db.models import Duel

    emulator: DiscordEmulator = world["emulator"]
    bot, alice, bob = world["bot"], world["alice"], world["bob"]
    _set_arena_channel(pg_factory, emulator.guild_id, emulator.channels["general"])

    nothing = await emulator.inject_message("general", alice, "a fox")
    assert await _outcome(bot, nothing) is ChannelOutcome.no_lora
    [note] = _replies_to(emulator, nothing)  # posted before the outcome was recorded
    assert "nothing to compare" in note["content"]
    # The same member again (and the message replayed): no second note in a while.
    again = await emulator.inject_message("general", alice, "a fox, again")
    assert await _outcome(bot, again) is ChannelOutcome.no_lora
    await emulator.dispatch("MESSAGE_CREATE", copy.deepcopy(nothing))

    # Bob already has as many open jobs as a member may have (settings: 3) in this guild.
    _row_lora(pg_factory, emulator.guild_id)
    with pg_factory() as session, session.begin():
        for _ in range(3):
            create_job(session, "stats", {}, requested_by=bob, guild_id=emulator.guild_id)
    limited = await emulator.inject_message("general", bob, "a limited fox")
    assert await _outcome(bot, limited) is ChannelOutcome.limit
    [limit_note] = _replies_to(emulator, limited)
    assert "3 jobs waiting or running" in limit_note["content"]
    sentinel = await emulator.inject_message("general", alice, "alice's fox, not limited")
    assert await _outcome(bot, sentinel) is ChannelOutcome.duel
    assert not _replies_to(emulator, again) and len(_replies_to(emulator, nothing)) == 1
    notes = _notes(emulator, "general")
    assert [p.message["content"] for p in notes] == [note["content"], limit_note["content"]]
    for post in notes:
        _assert_pings_nobody(post)
    with pg_factory() as session:
        assert [d.requested_by for d in session.scalars(select(Duel))] == [alice]


async def test_each_guild_has_its_own_arena_channel(
    world: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    from db.arena_gate import get_arena_settings
    from db.models import Duel

    emulator: DiscordEmulator = world["emulator"]
    bot, alice = world["bot"], world["alice"]
    a_general = emulator.channels["general"]
    b_id = await emulator.add_guild("Guild B", ("b-general", "b-arena"))
    await eventually(lambda: bot.get_guild(b_id) is not None)
    b_admin = emulator.add_user("b-admin", admin=True, guild_id=b_id)
    _row_lora(pg_factory, b_id, "b-lora")

    # B's admin names A's channel: refused (discord.py cannot resolve another server's
    # channel; the command checks the guild too), nothing stored.
    token = await emulator.inject_slash_command(
        b_admin, "b-general", "hps", admin_call("arena", channel=str(a_general))
    )
    assert await _private_answer(emulator, token) in (
        UNRESOLVABLE,
        "That channel is not in this server.",
    )
    with pg_factory() as session:
        assert get_arena_settings(session, b_id).arena_channel_id is None

    # Even a row of B's naming A's channel (written behind the command's back) makes no duel
    # in B of a message in A's channel: the lookup is by the message's own guild.
    _set_arena_channel(pg_factory, b_id, a_general)
    in_a = await emulator.inject_message("general", alice, "a prompt in A's channel")
    assert await _outcome(bot, in_a) is ChannelOutcome.ignored
    token = await emulator.inject_slash_command(
        b_admin, "b-general", "hps", admin_call("arena", channel=str(emulator.channels["b-arena"]))
    )
    assert "Human gate off" in await _private_answer(emulator, token)
    in_b = await emulator.inject_message("b-arena", alice, "a prompt in B's arena")
    assert await _outcome(bot, in_b) is ChannelOutcome.duel
    with pg_factory() as session:
        duel = session.scalars(select(Duel)).one()
        assert (duel.guild_id, duel.channel_id) == (b_id, emulator.channels["b-arena"])
    assert count(pg_factory, Duel, Duel.guild_id == emulator.guild_id) == 0
