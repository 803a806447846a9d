"""An unmodified discord.py client connects to the emulator and works against it."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

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


class CommandBot(discord.Client):
    """A client with one slash command (defer, then follow up) and one persistent button."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default())
        self.tree = discord.app_commands.CommandTree(self)
        self.ready = asyncio.Event()
        self.clicks: list[int] = []
        self.attachment_sizes: list[int] = []
        self.seen: list[str] = []

        @self.tree.command(name="measure", description="size of an attachment")
        async def measure(interaction: discord.Interaction, image: discord.Attachment) -> None:
            await interaction.response.defer(thinking=True)
            self.attachment_sizes.append(len(await image.read()))
            await interaction.followup.send(f"{image.filename}: {image.size} bytes")

    async def setup_hook(self) -> None:
        bot = self

        class Pick(discord.ui.View):
            def __init__(self) -> None:
                super().__init__(timeout=None)

            @discord.ui.button(label="1", custom_id="pick:1")
            async def one(
                self, interaction: discord.Interaction, _button: discord.ui.Button
            ) -> None:  # type: ignore[type-arg]
                bot.clicks.append(interaction.user.id)
                await interaction.response.send_message("recorded", ephemeral=True)

        self.add_view(Pick())
        await self.tree.sync()

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message.content)


async def wait_until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def test_slash_commands_buttons_and_resume(emulator: DiscordEmulator) -> None:
    bot = CommandBot()
    runner = asyncio.create_task(bot.start("emulator-token"))
    try:
        await asyncio.wait_for(bot.ready.wait(), 20)
        assert emulator.calls_to("PUT", "/commands")  # the tree was synced
        user = emulator.add_user("alice")
        token = await emulator.inject_slash_command(
            user,
            "general",
            "measure",
            [{"name": "image", "type": 11, "value": 0}],
            attachments=[("cat.png", b"x" * 1234, "image/png")],
        )
        record = emulator.interactions[token]
        await wait_until(lambda: bool(record.followups))
        assert record.callbacks == [5]  # deferred with "thinking"
        assert record.followups[0]["content"] == "cat.png: 1234 bytes"
        assert bot.attachment_sizes == [1234]

        message = await emulator.inject_message(
            "generations", emulator.add_user("gen", bot=True), "x"
        )
        message["components"] = [
            {
                "type": 1,
                "components": [{"type": 2, "style": 2, "label": "1", "custom_id": "pick:1"}],
            }
        ]
        click = await emulator.click_button(user, message, "pick:1")
        await wait_until(lambda: bool(emulator.interactions[click].callbacks))
        assert bot.clicks == [user]
        assert emulator.interactions[click].original["flags"] & 64  # ephemeral

        # A dropped connection: discord.py RESUMEs and receives what was sent meanwhile, once.
        [session] = emulator.sessions.values()
        seen = bot.seen
        await emulator.drop_connections()
        await emulator.inject_message("general", user, "while you were away")
        await wait_until(lambda: session.resumes >= 1 and "while you were away" in seen, 30)
        await asyncio.sleep(0.3)
        assert seen.count("while you were away") == 1

        # An invalidated session: the client identifies again.
        await emulator.invalidate_sessions()
        await wait_until(lambda: len(emulator.sessions) == 1, 30)
        assert session.session_id not in emulator.sessions
    finally:
        await bot.close()
        await asyncio.wait_for(runner, 10)


async def test_fatal_refusals_reach_the_client(emulator: DiscordEmulator) -> None:
    emulator.token = "right-token"
    client = Recorder()
    with pytest.raises(discord.LoginFailure):  # REST answers 401 at login
        await asyncio.wait_for(client.start("wrong-token"), 20)
    await client.close()

    emulator.privileged_intents_allowed = False  # Message Content not enabled in the portal
    client = Recorder()
    with pytest.raises(discord.PrivilegedIntentsRequired):  # gateway close code 4014
        await asyncio.wait_for(client.start("right-token"), 20)
    await client.close()

    emulator.privileged_intents_allowed = True
    client = Recorder()
    runner = asyncio.create_task(client.start("right-token"))
    await asyncio.wait_for(client.ready.wait(), 20)
    await client.close()
    await runner


async def run_hps_bot(
    emulator: DiscordEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    **env: str,
) -> tuple[int, str]:
    """``hps bot`` against the emulator with ``env`` set: (exit status, stderr)."""
    from cli.main import main
    from config import get_settings

    monkeypatch.chdir(tmp_path)
    for name, value in {
        "HPS_DATA_DIR": str(tmp_path),
        "DISCORD_API_BASE": emulator.api_base,
        "DISCORD_GATEWAY_URL": emulator.gateway_url,
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        status = await asyncio.to_thread(main, ["bot"])  # the bot runs its own event loop
    finally:
        get_settings.cache_clear()
    return status, capsys.readouterr().err


async def test_hps_bot_says_why_discord_refused_it(
    emulator: DiscordEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.token = "right-token"
    status, err = await run_hps_bot(
        emulator, tmp_path, monkeypatch, capsys, DISCORD_TOKEN="wrong-token-123"
    )
    assert status == 2
    assert err.strip().splitlines()[-1] == (
        "hps bot: error: Discord refused the bot token (DISCORD_TOKEN): copy it again from "
        "the developer portal's Bot page"
    )
    assert "wrong-token-123" not in err


async def test_hps_bot_says_when_discord_requires_more_shards(
    emulator: DiscordEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.max_guilds_per_shard = 0  # the emulator's guild is too many for one shard
    emulator.token = "right-token"
    status, err = await run_hps_bot(
        emulator, tmp_path, monkeypatch, capsys, DISCORD_TOKEN="right-token", SHARD_COUNT="1"
    )
    assert status == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            "hps bot: error: Discord requires more shards for this many guilds: raise SHARD_COUNT"
        )
    )


class ShardedRecorder(discord.AutoShardedClient):
    """A sharded client recording the guild of every message it receives."""

    def __init__(self, **sharding: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents, **sharding)
        self.ready = asyncio.Event()
        self.message_guilds: list[int] = []

    async def on_ready(self) -> None:
        self.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        self.message_guilds.append(message.guild.id if message.guild else 0)


async def test_each_shard_gets_only_its_guilds_and_their_events(emulator: DiscordEmulator) -> None:
    """Two processes' worth of shards ([0] and [1] of 2): READY, GUILD_CREATE and every guild
    event go only to the connection of the guild's shard, (guild_id >> 22) % 2."""
    guilds = [emulator.guild_id] + [
        await emulator.add_guild(f"Guild {k}", (f"chat-{k}",), shard=(k % 2, 2)) for k in range(4)
    ]
    by_shard = {k: {g for g in guilds if (g >> 22) % 2 == k} for k in (0, 1)}
    assert by_shard[0] and by_shard[1]
    clients = {k: ShardedRecorder(shard_ids=[k], shard_count=2) for k in (0, 1)}
    runners = [asyncio.create_task(c.start(f"token-{k}")) for k, c in clients.items()]
    try:
        for client in clients.values():
            await asyncio.wait_for(client.ready.wait(), 20)
        for k, client in clients.items():
            assert {g.id for g in client.guilds} == by_shard[k]
            [session] = emulator.sessions_of_shard(k)
            assert session.shard == (k, 2) and session.token == f"token-{k}"
            ready = json.loads(session.sent[0][1])
            assert ready["t"] == "READY" and ready["d"]["shard"] == [k, 2]
            assert {int(g["id"]) for g in ready["d"]["guilds"]} == by_shard[k]

        user = emulator.add_user("alice")
        for k in range(4):
            await emulator.inject_message(f"chat-{k}", user, f"hello {k}")
        await wait_until(lambda: sum(len(c.message_guilds) for c in clients.values()) == 4)
        await asyncio.sleep(0.2)  # nothing else arrives
        for k, client in clients.items():
            assert sorted(client.message_guilds) == sorted(
                g for g in guilds[1:] if g in by_shard[k]
            )
            [session] = emulator.sessions_of_shard(k)
            assert session.guilds_seen == by_shard[k]
        # A guild added later: its GUILD_CREATE reaches its shard only.
        late = await emulator.add_guild("Late", ("late",), shard=(1, 2))
        await wait_until(lambda: clients[1].get_guild(late) is not None)
        assert clients[0].get_guild(late) is None
    finally:
        for client in clients.values():
            await client.close()
        await asyncio.wait_for(asyncio.gather(*runners), 10)


async def test_without_a_shard_count_the_client_asks_discord(emulator: DiscordEmulator) -> None:
    """GET /gateway/bot answers the URL, the recommended shard count and the session start
    limit (Discord's documented shape); discord.py then runs that many shards."""
    async with aiohttp.ClientSession() as http:
        async with http.get(emulator.api_base + "/gateway/bot") as response:
            answer = await response.json()
    assert answer["url"] == emulator.gateway_url and answer["shards"] == 1
    assert set(answer["session_start_limit"]) == {
        "total",
        "remaining",
        "reset_after",
        "max_concurrency",
    }
    emulator.gateway_shards = 2
    client = ShardedRecorder()
    runner = asyncio.create_task(client.start("t"))
    try:
        await asyncio.wait_for(client.ready.wait(), 30)  # discord.py waits 5 s between shards
        assert client.shard_count == 2 and sorted(client.shards) == [0, 1]
        assert sorted(s.shard for s in emulator.sessions.values() if s.shard) == [(0, 2), (1, 2)]
        assert client.get_guild(emulator.guild_id) is not None
    finally:
        await client.close()
        await asyncio.wait_for(runner, 10)


@pytest.mark.parametrize(
    ("sharding", "code"),
    [
        ({"shard_ids": [2], "shard_count": 2}, 4010),  # Invalid shard: 0 <= id < count
        ({"shard_count": 1}, 4011),  # Sharding required: too many guilds on one session
    ],
)
async def test_refused_shards_close_the_connection(
    emulator: DiscordEmulator, sharding: dict[str, Any], code: int
) -> None:
    await emulator.add_guild("Second", ("second",))
    emulator.max_guilds_per_shard = 1
    client = ShardedRecorder(**sharding)
    with pytest.raises(discord.ConnectionClosed) as refused:
        await asyncio.wait_for(client.start("t"), 20)
    await client.close()
    assert refused.value.code == code
    assert not emulator.sessions  # no session was created
