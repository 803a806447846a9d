"""An unmodified discord.py client connects to the emulator and works against it."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import discord
import pytest

from sandbox.emulator import DiscordEmulator, point_discord_py_at


@pytest.fixture
async def emulator():  # type: ignore[no-untyped-def]
    emulator = await DiscordEmulator().start()
    point_discord_py_at(emulator)
    yield emulator
    await emulator.stop()


class Recorder(discord.Client):
    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents)
        self.ready = asyncio.Event()
        self.seen: list[discord.Message] = []
        self.got_message = asyncio.Event()

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)
        self.got_message.set()


async def test_client_connects_receives_messages_and_posts(emulator: DiscordEmulator) -> None:
    client = Recorder()
    runner = asyncio.create_task(client.start("emulator-token"))
    try:
        await asyncio.wait_for(client.ready.wait(), 20)
        guild = client.get_guild(emulator.guild_id)
        assert guild is not None and guild.name == "Generation Lab"
        channel = guild.get_channel(emulator.channels["generations"])
        assert isinstance(channel, discord.TextChannel)

        generator = emulator.add_user("Midjourney Bot", bot=True)
        png = b"\x89PNG\r\n\x1a\n" + b"0" * 100
        await emulator.inject_message(
            "generations", generator, "**a red fox** - <@1>", [("grid.png", png, "image/png")]
        )
        await asyncio.wait_for(client.got_message.wait(), 10)
        message = client.seen[-1]
        assert message.content == "**a red fox** - <@1>" and message.author.bot
        async with (
            aiohttp.ClientSession() as session,
            session.get(message.attachments[0].url) as response,
        ):
            assert await response.read() == png

        # discord.py waits a 429 out (the Via header marks it as Discord's, not a ban).
        emulator.fail_next_with_429()
        sent = await channel.send("hello", file=discord.File(io.BytesIO(b"abc"), "a.txt"))
        assert sent.content == "hello" and sent.attachments[0].filename == "a.txt"
        assert len(emulator.calls_to("POST", f"/channels/{channel.id}/messages")) == 2
        fetched = await channel.fetch_message(sent.id)
        assert fetched.id == sent.id
        history = [m.id async for m in channel.history(limit=10)]
        assert history[:2] == [sent.id, message.id]
    finally:
        await client.close()
        await asyncio.wait_for(runner, 10)
