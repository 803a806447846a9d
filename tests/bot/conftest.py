"""Live stacks for bot tests: the Discord emulator and the bot (real discord.py) on PostgreSQL;
``world`` harvests (no worker), ``live`` adds Redis and a worker process with a tiny HPS model
and the tiny SD pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.client import HpsBot
from config import Settings, load_settings
from db.channels import enable_channel
from media.store import LocalImageStore
from sandbox.emulator import DiscordEmulator
from tests.worker.harness import (
    BROKER_URL,
    flush_broker,
    register_tiny_model,
    start_worker,
    worker_env,
)


def bot_settings(
    emulator: DiscordEmulator, pg_url: str, tmp_path: Path, **overrides: Any
) -> Settings:
    """Settings of a bot talking to ``emulator`` and the test database, its data under
    ``tmp_path``."""
    values: dict[str, Any] = {
        "database_url": pg_url,
        "broker_url": BROKER_URL,
        "storage_url": (tmp_path / "images").as_uri(),
        "hps_data_dir": tmp_path,
        "discord_token": "t",
        "discord_api_base": emulator.api_base,
        "discord_gateway_url": emulator.gateway_url,
        "allowed_cdn_hosts": f"127.0.0.1:{emulator.port}",
        "allow_insecure_cdn": True,
    }
    return load_settings(**{**values, **overrides})


@asynccontextmanager
async def running_bot(bot: HpsBot) -> AsyncIterator[HpsBot]:
    """``bot`` connected and ready for the duration, closed after."""
    token = bot.settings.discord_token
    assert token is not None
    runner = asyncio.create_task(bot.start(token.get_secret_value()))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        yield bot
    finally:
        await bot.close()
        await asyncio.wait_for(runner, 10)


@pytest.fixture
async def live(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    flush_broker()
    (tmp_path / "models").mkdir()
    register_tiny_model(pg_factory, tmp_path / "models", "bot-score", seed=2)
    worker = start_worker(worker_env(pg_url, tmp_path), tmp_path / "worker.log", name="bot")
    emulator = await DiscordEmulator().start()
    settings = bot_settings(emulator, pg_url, tmp_path)
    try:
        async with running_bot(HpsBot(settings)) as bot:
            yield {"emulator": emulator, "bot": bot, "settings": settings}
    finally:
        await emulator.stop()
        worker.stop()


@pytest.fixture
async def world(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    emulator = await DiscordEmulator().start()
    # No worker here: jobs an admin command queues wait in a broker of the test's own.
    broker = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    settings = bot_settings(emulator, pg_url, tmp_path, broker_url=broker, max_image_bytes=200_000)
    with pg_factory() as session, session.begin():
        enable_channel(
            session, emulator.guild_id, emulator.channels["generations"], "multi_attachment"
        )
    try:
        async with running_bot(HpsBot(settings)) as bot:
            yield {
                "emulator": emulator,
                "bot": bot,
                "store": LocalImageStore(tmp_path / "images"),
                "generator": emulator.add_user("ImageGen", bot=True),
                "alice": emulator.add_user("alice"),
                "bob": emulator.add_user("bob"),
            }
    finally:
        await emulator.stop()


@pytest.fixture
async def bot_alone(
    pg_url: str,
    pg_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[DiscordEmulator, HpsBot]]:
    """The emulator and the bot, without a worker; the bot's own delivery loop is off, so
    each test decides when a delivery round runs."""
    emulator = await DiscordEmulator().start()
    bot = HpsBot(bot_settings(emulator, pg_url, tmp_path))

    async def no_loop() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(bot.delivery, "run", no_loop)
    try:
        async with running_bot(bot):
            yield emulator, bot
    finally:
        await emulator.stop()
