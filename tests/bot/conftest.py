"""A live stack for bot tests: the Discord emulator, the bot (real discord.py), PostgreSQL,
Redis and a worker process with a tiny HPS model and the tiny SD pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.client import HpsBot
from config import load_settings
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
