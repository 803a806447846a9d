"""Past one gateway connection: the bot split over two OS processes, shards [0, 1] and [2, 3]
of 4, against the Discord emulator and one PostgreSQL database, with guilds spread over the
four shards. Each process receives only its shards' guilds and catches up only their channels;
every generation is harvested once and every result is posted once, by whichever process
claims it. And the outbox lease: a deliverer never posts a row another one claimed after its
lease ran out."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import bot.delivery as delivery_module
from bot.client import HpsBot, shard_of
from bot.delivery import OutboxDelivery
from db.channels import advance_last_seen, enable_channel
from db.models import Generation, OutboxMessage
from db.outbox import write_outbox
from sandbox.emulator import DiscordEmulator
from tests.bot.conftest import bot_settings, running_bot
from tests.bot.helpers import eventually, png_bytes, post_generation, score_options
from tests.worker.harness import (
    ROOT,
    flush_broker,
    register_tiny_model,
    start_worker,
    worker_env,
)

SHARD_COUNT = 4
PROCESSES = {"token-shards-0-1": [0, 1], "token-shards-2-3": [2, 3]}
NOTICES_PER_GUILD = 6


class BotProcess:
    """``hps bot`` in a subprocess of its own session (with its intake pool), its output in
    ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "bot"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for(self, text: str, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while text not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"bot process exited:\n{self.log()[-4000:]}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{text!r} not in the bot log:\n{self.log()[-4000:]}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._log.close()


@contextmanager
def bot_processes(
    emulator: DiscordEmulator, pg_url: str, data_dir: Path
) -> Iterator[dict[str, BotProcess]]:
    """One ``hps bot`` per entry of PROCESSES (its token tells its calls apart in the
    emulator), sharing the database, the broker and the image store."""
    started: dict[str, BotProcess] = {}
    try:
        for token, shard_ids in PROCESSES.items():
            env = worker_env(
                pg_url,
                data_dir,
                DISCORD_TOKEN=token,
                DISCORD_API_BASE=emulator.api_base,
                DISCORD_GATEWAY_URL=emulator.gateway_url,
                ALLOWED_CDN_HOSTS=f"127.0.0.1:{emulator.port}",
                ALLOW_INSECURE_CDN="true",
                SHARD_COUNT=str(SHARD_COUNT),
                SHARD_IDS=",".join(map(str, shard_ids)),
                LOG_LEVEL="INFO",
                LOG_FORMAT="text",
                BOT_METRICS_PORT="0",
            )
            started[token] = BotProcess(env, data_dir / f"bot-{token}.log")
        yield started
    finally:
        for process in started.values():
            process.stop()


@pytest.fixture
async def sharded_world(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    """The emulator with one guild per shard of 4 besides its first guild, a harvested
    channel in each (with history the bots missed), a worker, and no bot yet."""
    flush_broker()
    (tmp_path / "models").mkdir()
    register_tiny_model(pg_factory, tmp_path / "models", "shard-score", seed=2)
    worker = start_worker(worker_env(pg_url, tmp_path), tmp_path / "worker.log", name="shards")
    emulator = await DiscordEmulator().start()
    try:
        # channel names: (harvested, talk) per guild
        channels = {emulator.guild_id: ("generations", "general")}
        for k in range(SHARD_COUNT):
            guild = await emulator.add_guild(
                f"Guild {k}", (f"gen-{k}", f"talk-{k}"), shard=(k, SHARD_COUNT)
            )
            channels[guild] = (f"gen-{k}", f"talk-{k}")
        yield {"emulator": emulator, "channels": channels, "tmp_path": tmp_path}
    finally:
        await emulator.stop()
        worker.stop()


def owner_of(guild_id: int) -> str:
    """The token of the bot process whose shards hold ``guild_id``."""
    shard = shard_of(guild_id, SHARD_COUNT)
    return next(token for token, shards in PROCESSES.items() if shard in shards)


async def test_two_processes_split_the_shards_and_post_every_result_once(
    sharded_world: dict[str, Any], pg_url: str, pg_factory: sessionmaker[Session]
) -> None:
    emulator: DiscordEmulator = sharded_world["emulator"]
    channels: dict[int, tuple[str, str]] = sharded_world["channels"]
    assert {shard_of(g, SHARD_COUNT) for g in channels} == set(range(SHARD_COUNT))
    generator = emulator.add_user("ImageGen", bot=True)
    alice = emulator.add_user("alice")

    # Each harvested channel: an old generation (before the last seen message: not walked)
    # and two posted while no bot was connected (only the startup catch-up finds them).
    expected: dict[int, str] = {}  # message id -> harvested channel
    old: list[int] = []
    for n, (guild, (harvested, _talk)) in enumerate(channels.items()):
        channel_id = emulator.channels[harvested]
        first = await post_generation(
            emulator, harvested, generator, alice, f"old {n}", n, dispatch=False
        )
        old.append(int(first["id"]))
        with pg_factory() as session, session.begin():
            enable_channel(session, guild, channel_id, "multi_attachment")
            advance_last_seen(session, {channel_id: int(first["id"])})
        for m in range(2):
            missed = await post_generation(
                emulator, harvested, generator, alice, f"missed {n}.{m}", 10 * n + m, dispatch=False
            )
            expected[int(missed["id"])] = harvested

    data_dir: Path = sharded_world["tmp_path"]
    with bot_processes(emulator, pg_url, data_dir) as processes:
        await asyncio.gather(
            *(
                process.wait_for(f"bot ready: shards {PROCESSES[token]} of {SHARD_COUNT}", 120)
                for token, process in processes.items()
            )
        )

        # Each process holds one session per shard of its own, and was sent its guilds only.
        for token, shard_ids in PROCESSES.items():
            sessions = [s for s in emulator.sessions.values() if s.token == token]
            assert sorted(s.shard for s in sessions if s.shard) == [
                (k, SHARD_COUNT) for k in shard_ids
            ]
            own = {g for g in channels if owner_of(g) == token}
            assert own and set().union(*(s.guilds_seen for s in sessions)) == own
            for k in shard_ids:  # and says so itself
                logged = re.search(
                    rf"shard {k} of {SHARD_COUNT} ready: \d+ guilds (\[.*\])",
                    (processes[token].log()),
                )
                assert logged, processes[token].log()[-3000:]
                assert {int(g) for g in re.findall(r"\d+", logged[1])} == {
                    g for g in channels if shard_of(g, SHARD_COUNT) == k
                }

        # Live generations: the gateway routes each to its guild's process only.
        for n, (_guild, (harvested, _talk)) in enumerate(channels.items()):
            for m in range(2):
                live = await post_generation(
                    emulator, harvested, generator, alice, f"live {n}.{m}", 50 + 10 * n + m
                )
                expected[int(live["id"])] = harvested

        # Results: a score job per guild (the interaction reaches the guild's process; the
        # result goes out from whichever process claims it), and notices written straight
        # into the outbox, as a worker does.
        tokens, members = {}, {}
        for guild, (_harvested, talk) in channels.items():
            members[guild] = emulator.add_user(f"member of {guild}")  # own job limits each
            tokens[guild] = await emulator.inject_slash_command(
                members[guild],
                talk,
                "hps",
                score_options(f"a fox of guild {guild}"),
                attachments=[("fox.png", png_bytes(), "image/png")],
            )
        notices: dict[str, int] = {}
        with pg_factory() as session, session.begin():
            for guild, (_harvested, talk) in channels.items():
                for n in range(NOTICES_PER_GUILD):
                    text = f"notice {n} for {guild}"
                    outbox_id = write_outbox(
                        session,
                        "notice",
                        {"text": text},
                        channel_id=emulator.channels[talk],
                        guild_id=guild,
                    )
                    assert outbox_id is not None
                    notices[text] = outbox_id

        def harvested_ids() -> list[int]:
            with pg_factory() as session:
                return [int(i) for i in session.scalars(select(Generation.source_message_id))]

        def undelivered() -> int:
            with pg_factory() as session:
                return len(
                    session.scalars(
                        select(OutboxMessage.id).where(OutboxMessage.delivered_at.is_(None))
                    ).all()
                )

        records = {guild: emulator.interactions[token] for guild, token in tokens.items()}
        await eventually(lambda: len(harvested_ids()) >= len(expected), 60)
        await eventually(lambda: all(r.public_followups for r in records.values()), 120)
        await eventually(lambda: undelivered() == 0, 60)
        await asyncio.sleep(2.0)  # time for a duplicate to show up, if there were one

        # Every generation harvested exactly once; none from before the last seen message.
        stored = harvested_ids()
        assert sorted(stored) == sorted(expected)
        assert not set(old) & set(stored)
        # Each process walked the history of its own guilds' channels only.
        for channel_name in {c for c, _t in channels.values()}:
            channel_id = emulator.channels[channel_name]
            walkers = {
                c.token
                for c in emulator.calls_to("GET", f"/channels/{channel_id}/messages")
                if "/messages/" not in c.path
            }
            assert walkers == {owner_of(emulator.guild_of(channel_id))}, channel_name

        # Every result posted exactly once.
        for guild, record in records.items():
            assert len(record.public_followups) == 1, guild
            assert record.public_followups[0]["content"].startswith(f"<@{members[guild]}> HPS ")
            assert record.public_followups[0]["guild_id"] == str(guild)
        for text in notices:
            posts = [p for p in emulator.posts if p.message["content"] == text]
            assert len(posts) == 1, text
        with pg_factory() as session:
            rows = session.scalars(select(OutboxMessage)).all()
            assert len(rows) == len(notices) + len(records)
            assert all(r.delivered_at is not None and r.dead_at is None for r in rows)
        assert all(p.process.poll() is None for p in processes.values())


async def test_a_row_claimed_by_another_deliverer_after_the_lease_is_not_posted_again(
    bot_alone: tuple[DiscordEmulator, HpsBot],
    pg_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow deliverer claims 6 rows of one channel with a 3 s lease and posts one a
    second. The rows it has not reached when the lease runs out are claimed by a second
    deliverer (another bot process) and posted there; the first one, renewing each lease
    before its post, finds them taken and leaves them: every row is posted once."""
    emulator, bot = bot_alone
    monkeypatch.setattr(delivery_module, "LEASE_S", 3.0)
    monkeypatch.setattr(delivery_module, "POST_TIMEOUT_S", 2.0)
    monkeypatch.setattr(delivery_module, "LEASE_MARGIN_S", 0.1)
    general = emulator.channels["general"]
    with pg_factory() as session, session.begin():
        ids = [
            write_outbox(session, "notice", {"text": f"row {n}"}, channel_id=general)
            for n in range(6)
        ]
    slow, fast = bot.delivery, OutboxDelivery(bot)
    post = slow._post

    async def slow_post(row: dict[str, Any]) -> Any:
        await asyncio.sleep(1.0)
        return await post(row)

    monkeypatch.setattr(slow, "_post", slow_post)

    def claimed() -> bool:
        with pg_factory() as session:
            rows = session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids)))
            return all(r.attempts == 1 for r in rows)

    first_round = asyncio.create_task(slow.deliver_pending())
    await eventually(claimed, 10)  # the slow deliverer holds all six
    while not first_round.done():  # the other process polls meanwhile
        await fast.deliver_pending()
        await asyncio.sleep(0.05)
    await first_round

    for n in range(6):
        assert [p.message["content"] for p in emulator.posts].count(f"row {n}") == 1
    assert slow.delivered >= 1 and fast.delivered >= 2  # rows 5 and 6 at least went there
    assert slow.delivered + fast.delivered == 6
    with pg_factory() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids))).all()
        assert all(r.delivered_at is not None for r in rows)


async def test_a_shard_that_identifies_again_catches_up_its_missed_history(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """One process with two shards: when Discord refuses to resume one of them, discord.py
    dispatches no READY (only that shard's), yet its guilds' missed messages are recovered
    from the channel history."""
    emulator = await DiscordEmulator().start()
    try:
        other = await emulator.add_guild(
            "Other", ("other-gen",), shard=(1 - shard_of(emulator.guild_id, 2), 2)
        )
        shard = shard_of(other, 2)
        with pg_factory() as session, session.begin():
            enable_channel(session, other, emulator.channels["other-gen"], "multi_attachment")
        generator, alice = emulator.add_user("ImageGen", bot=True), emulator.add_user("alice")
        bot = HpsBot(bot_settings(emulator, pg_url, tmp_path, shard_count=2))
        async with running_bot(bot):
            assert sorted(bot.shards) == [0, 1]
            cog: Any = bot.get_cog("HarvestCog")
            await post_generation(emulator, "other-gen", generator, alice, "seen live", 1)
            await eventually(lambda: len(stored(pg_factory)) == 1)
            await cog.flush_last_seen()

            await emulator.invalidate_sessions(shard)  # the other shard keeps its session
            missed = await post_generation(emulator, "other-gen", generator, alice, "missed", 2)
            await eventually(lambda: len(emulator.sessions_of_shard(shard)) == 1, 30)
            await eventually(lambda: int(missed["id"]) in stored(pg_factory), 30)
            assert len(emulator.sessions_of_shard(1 - shard)) == 1  # never re-identified
            assert emulator.sessions_of_shard(1 - shard)[0].identifies == 1
    finally:
        await emulator.stop()


def stored(factory: sessionmaker[Session]) -> list[int]:
    """The source message ids of the stored generations."""
    with factory() as session:
        return [int(i) for i in session.scalars(select(Generation.source_message_id))]
