"""The emulator enforces what Discord enforces, so the suite cannot pass on behaviour Discord
rejects: message limits, the first follow-up's visibility, pings under allowed_mentions, the
interaction deadlines, reaction removal events, option constraints and several guilds."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest

from sandbox.discord_rules import pings_of
from sandbox.emulator import DiscordEmulator, OptionRefused, point_discord_py_at
from tests.sandbox.test_emulator import wait_until


class RulesBot(discord.Client):
    """A client whose commands exercise the rules: ``/visibility`` defers publicly or
    privately and sends two follow-ups; ``/slow`` answers too late; ``/echo`` has a
    length-limited option."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents)
        self.tree = discord.app_commands.CommandTree(self)
        self.ready = asyncio.Event()
        self.raw_events: list[tuple[str, Any]] = []
        self.errors: list[BaseException] = []

        @self.tree.command(name="visibility", description="defer, then two follow-ups")
        async def visibility(interaction: discord.Interaction, private_defer: bool) -> None:
            await interaction.response.defer(ephemeral=private_defer, thinking=True)
            await interaction.followup.send("first", ephemeral=not private_defer)
            await interaction.followup.send("second", ephemeral=not private_defer)

        @self.tree.command(name="slow", description="answers after Discord's 3 seconds")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.3)
            try:
                await interaction.response.defer()
            except discord.HTTPException as exc:
                self.errors.append(exc)

        @self.tree.command(name="late", description="follows up after the token's lifetime")
        async def late(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await asyncio.sleep(0.3)
            try:
                await interaction.followup.send("too late")
            except discord.HTTPException as exc:
                self.errors.append(exc)

        @self.tree.command(name="echo", description="a short option")
        async def echo(
            interaction: discord.Interaction, text: discord.app_commands.Range[str, 1, 20]
        ) -> None:
            await interaction.response.send_message(text)

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self.raw_events.append(("remove", payload))

    async def on_raw_reaction_clear(self, payload: discord.RawReactionClearEvent) -> None:
        self.raw_events.append(("clear", payload))

    async def on_raw_reaction_clear_emoji(
        self, payload: discord.RawReactionClearEmojiEvent
    ) -> None:
        self.raw_events.append(("clear_emoji", payload))


@pytest.fixture
async def running() -> AsyncIterator[tuple[DiscordEmulator, RulesBot]]:
    emulator = await DiscordEmulator().start()
    point_discord_py_at(emulator)
    second = await emulator.add_guild("Second Lab", ("b-generations",))
    client = RulesBot()
    runner = asyncio.create_task(client.start("emulator-token"))
    try:
        await asyncio.wait_for(client.ready.wait(), 20)
        assert client.get_guild(second) is not None
        yield emulator, client
    finally:
        await client.close()
        await asyncio.wait_for(runner, 10)
        await emulator.stop()


async def test_message_limits(running: tuple[DiscordEmulator, RulesBot]) -> None:
    emulator, client = running
    channel = client.get_channel(emulator.channels["general"])
    assert isinstance(channel, discord.TextChannel)
    await channel.send("x" * 2000)  # exactly the limit is fine
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send("x" * 2001)
    assert (refused.value.status, refused.value.code) == (400, 50035)
    files = [discord.File(io.BytesIO(b"a"), f"{n}.txt") for n in range(11)]
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send("eleven files", files=files)
    assert (refused.value.status, refused.value.code) == (400, 50035)
    # discord.py refuses 11 embeds itself; another client would meet Discord's refusal.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{emulator.api_base}/channels/{channel.id}/messages",
            json={"embeds": [{"title": str(n)} for n in range(11)]},
        ) as response,
    ):
        assert response.status == 400 and (await response.json())["code"] == 50035
    emulator.upload_limit = 100
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send(file=discord.File(io.BytesIO(b"a" * 101), "big.bin"))
    assert (refused.value.status, refused.value.code) == (413, 40005)


async def test_pings_follow_allowed_mentions(running: tuple[DiscordEmulator, RulesBot]) -> None:
    emulator, client = running
    channel = client.get_channel(emulator.channels["general"])
    assert isinstance(channel, discord.TextChannel)
    alice, bob = emulator.add_user("alice"), emulator.add_user("bob")
    text = f"@everyone <@&{emulator.guild_id}> <@{alice}> <@!{bob}>"
    await channel.send(text)  # no allowed_mentions: everything mentioned pings
    pings = emulator.posts[-1].pings
    assert pings.everyone and pings.users == [alice, bob] and pings.roles == [emulator.guild_id]
    await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
    assert not emulator.posts[-1].pings.anyone
    only_alice = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(alice)])
    await channel.send(text, allowed_mentions=only_alice)
    assert emulator.posts[-1].pings.users == [alice] and not emulator.posts[-1].pings.everyone
    assert emulator.posts[-1].allowed_mentions is not None
    # Escaped mentions are text, not mentions.
    assert not pings_of(discord.utils.escape_mentions(text), None).anyone


async def test_the_first_follow_up_takes_the_deferrals_visibility(
    running: tuple[DiscordEmulator, RulesBot],
) -> None:
    emulator, _client = running
    user = emulator.add_user("alice")
    for private_defer in (False, True):
        token = await emulator.inject_slash_command(
            user,
            "general",
            "visibility",
            [{"name": "private_defer", "type": 5, "value": private_defer}],
        )
        record = emulator.interactions[token]
        await wait_until(lambda: len(record.followups) == 2)  # noqa: B023
        first, second = record.followups
        # The first follow-up became the deferred response, with the deferral's visibility,
        # whatever flag it asked for; the second kept its own.
        assert record.original is first
        assert bool(first["flags"] & 64) is private_defer
        assert bool(second["flags"] & 64) is not private_defer
        in_history = emulator.messages[emulator.channels["general"]]
        assert (int(first["id"]) in in_history) is not private_defer


async def test_interaction_deadlines(running: tuple[DiscordEmulator, RulesBot]) -> None:
    emulator, client = running
    user = emulator.add_user("alice")
    emulator.ack_deadline_s = 0.1
    token = await emulator.inject_slash_command(user, "general", "slow")
    await wait_until(lambda: bool(client.errors))
    error = client.errors.pop()
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert not emulator.interactions[token].callbacks
    emulator.ack_deadline_s, emulator.token_lifetime_s = 3.0, 0.2
    await emulator.inject_slash_command(user, "general", "late")
    await wait_until(lambda: bool(client.errors))
    error = client.errors.pop()
    assert isinstance(error, discord.HTTPException) and error.code == 50027


async def test_option_constraints_registered_by_the_bot(
    running: tuple[DiscordEmulator, RulesBot],
) -> None:
    emulator, _client = running
    user = emulator.add_user("alice")
    with pytest.raises(OptionRefused):
        await emulator.inject_slash_command(
            user, "general", "echo", [{"name": "text", "type": 3, "value": "x" * 21}]
        )
    token = await emulator.inject_slash_command(
        user, "general", "echo", [{"name": "text", "type": 3, "value": "x" * 20}]
    )
    await wait_until(lambda: emulator.interactions[token].callbacks == [4])


async def test_reaction_removal_events(running: tuple[DiscordEmulator, RulesBot]) -> None:
    emulator, client = running
    alice, bob = emulator.add_user("alice"), emulator.add_user("bob")
    message = await emulator.inject_message("general", alice, "pick one")
    for user, emoji in ((alice, "1\ufe0f\u20e3"), (bob, "1\ufe0f\u20e3"), (alice, "2\ufe0f\u20e3")):
        await emulator.inject_reaction(user, message, emoji)
    await emulator.remove_reaction(alice, message, "1\ufe0f\u20e3")
    await emulator.remove_reaction_emoji(message, "2\ufe0f\u20e3")
    stored = emulator.messages[emulator.channels["general"]][int(message["id"])]
    assert [(r["emoji"]["name"], r["count"]) for r in stored["reactions"]] == [("1\ufe0f\u20e3", 1)]
    await emulator.remove_all_reactions(message)
    assert stored["reactions"] == []
    await wait_until(lambda: len(client.raw_events) == 3)
    kinds = [kind for kind, _ in client.raw_events]
    assert kinds == ["remove", "clear_emoji", "clear"]
    removed = client.raw_events[0][1]
    assert removed.user_id == alice and str(removed.emoji) == "1\ufe0f\u20e3"


async def test_guilds_are_separate(running: tuple[DiscordEmulator, RulesBot]) -> None:
    emulator, client = running
    second = emulator.guild_of(emulator.channels["b-generations"])
    assert second != emulator.guild_id and len(client.guilds) == 2
    admin_a = emulator.add_user("mod-a", admin=True)
    admin_b = emulator.add_user("mod-b", admin=True, guild_id=second)
    assert (
        emulator._member(admin_a, emulator.guild_id)["permissions"]
        != (emulator._member(admin_a, second)["permissions"])
    )
    assert (
        emulator._member(admin_b, second)["permissions"]
        == (emulator._member(admin_a, emulator.guild_id)["permissions"])
    )
    message = await emulator.inject_message("b-generations", admin_b, "hello from B")
    assert message["guild_id"] == str(second)
    channel = client.get_channel(emulator.channels["b-generations"])
    assert isinstance(channel, discord.TextChannel) and channel.guild.id == second
    fetched = await client.fetch_channel(emulator.channels["b-generations"])
    assert fetched.id == channel.id
    with pytest.raises(discord.NotFound) as unknown:
        await client.fetch_channel(4_242_424_242)
    assert unknown.value.code == 10003


def test_sharding_rules() -> None:
    from sandbox.discord_rules import (
        INVALID_SHARD,
        SHARDING_REQUIRED,
        parse_shard,
        recommended_shards,
        shard_of,
        shard_refusal,
    )

    # Discord's formula: the timestamp part of the snowflake, modulo the shard count.
    assert [shard_of((t << 22) | 12345, 4) for t in (8, 9, 10, 11)] == [0, 1, 2, 3]
    assert parse_shard(None) is None and parse_shard([2, 3]) == (2, 3)
    for bad in ([3, 3], [-1, 2], [0, 0], [0], "0,1", [0, 1, 2], [True, 2], [0.0, 1]):
        with pytest.raises(ValueError):
            parse_shard(bad)
        assert shard_refusal(bad, []) == INVALID_SHARD
        assert INVALID_SHARD[0] == 4010
    guilds = [(t << 22) for t in range(6)]  # shard (of 2): 0, 1, 0, 1, 0, 1
    assert shard_refusal([0, 2], guilds, max_guilds=3) is None
    assert shard_refusal(None, guilds, max_guilds=3) == SHARDING_REQUIRED  # 6 guilds, 1 session
    assert shard_refusal([0, 1], guilds, max_guilds=5) == SHARDING_REQUIRED
    assert SHARDING_REQUIRED[0] == 4011
    assert [recommended_shards(n) for n in (0, 1, 1000, 1001, 2500)] == [1, 1, 1, 2, 3]
