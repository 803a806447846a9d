"""`/hps score` end to end: emulator -> bot (defer) -> job queue -> worker -> outbox -> bot ->
follow-up in the channel. Real discord.py, PostgreSQL, Redis and a worker process."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from bot.client import HpsBot
from config import load_settings
from sandbox.emulator import DiscordEmulator
from tests.bot.test_harvest import eventually
from tests.worker.harness import (
    BROKER_URL,
    flush_broker,
    register_tiny_model,
    start_worker,
    worker_env,
)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((80, 60), 50).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def score_options(prompt: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "score",
            "type": 1,
            "options": [
                {"name": "image", "type": 11, "value": 0},
                {"name": "prompt", "type": 3, "value": prompt},
            ],
        }
    ]


@pytest.fixture
async def setup(
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
        yield {"emulator": emulator, "bot": bot}
    finally:
        await bot.close()
        await asyncio.wait_for(runner, 10)
        await emulator.stop()
        worker.stop()


async def test_score_an_uploaded_image(setup: dict[str, Any]) -> None:
    emulator: DiscordEmulator = setup["emulator"]
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
    await eventually(lambda: bool(record.followups), 60)
    answer = record.followups[0]["content"]
    assert answer.startswith(f"<@{alice}> HPS ") and "model bot-score" in answer


async def test_a_non_image_gets_a_short_private_answer(setup: dict[str, Any]) -> None:
    emulator: DiscordEmulator = setup["emulator"]
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
