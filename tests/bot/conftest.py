"""Live stacks for bot tests: the Discord emulator and the bot (real discord.py) on PostgreSQL;
``world`` harvests (no worker), ``live`` adds Redis and a worker process with a tiny HPS model
and the tiny SD pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.client import HpsBot
from config import load_settings
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


@pytest.fixture
async def live(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    flush_broker()
    (tmp_path / "models").mkdir()
    register_tiny_model(pg_factory, tmp_path / "models", "bot-score", seed=2)
    worker = start_worker(worker_env(pg_url, tmp_path), tmp_path / "worker.log", name="bot")
    emulator = await DiscordEmulator().start()
    settings = load_settings(
        database_url=pg_url,
        broker_url=BROKER_URL,
        storage_url=(tmp_path / "images").as_uri(),
        hps_data_dir=tmp_path,
        discord_token="t",
        discord_api_base=emulator.api_base,
        discord_gateway_url=emulator.gateway_url,
        allowed_cdn_hosts=f"127.0.0.1:{emulator.port}",
        allow_insecure_cdn=True,
    )
    bot = HpsBot(settings)
    runner = asyncio.create_task(bot.start("t"))
    await asyncio.wait_for(bot.wait_until_ready(), 20)
    try:
        yield {"emulator": emulator, "bot": bot, "settings": settings}
    finally:
        await bot.close()
        await asyncio.wait_for(runner, 10)
        await emulator.stop()
        worker.stop()


@pytest.fixture
async def world(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    emulator = await DiscordEmulator().start()
    settings = load_settings(
        database_url=pg_url,
        storage_url=(tmp_path / "images").as_uri(),
        hps_data_dir=tmp_path,
        discord_token="emulator-token",
        discord_api_base=emulator.api_base,
        discord_gateway_url=emulator.gateway_url,
        allowed_cdn_hosts=f"127.0.0.1:{emulator.port}",
        allow_insecure_cdn=True,
        max_image_bytes=200_000,
    )
    with pg_factory() as session, session.begin():
        enable_channel(
            session, emulator.guild_id, emulator.channels["generations"], "multi_attachment"
        )
    bot = HpsBot(settings)
    runner = asyncio.create_task(bot.start("emulator-token"))
    await asyncio.wait_for(bot.wait_until_ready(), 20)
    yield {
        "emulator": emulator,
        "bot": bot,
        "store": LocalImageStore(tmp_path / "images"),
        "generator": emulator.add_user("ImageGen", bot=True),
        "alice": emulator.add_user("alice"),
        "bob": emulator.add_user("bob"),
    }
    await bot.close()
    await asyncio.wait_for(runner, 10)
    await emulator.stop()
