"""The delivery loop's rounds: a NOTIFY wake delivers the outbox at once, but the timed work
(closing overdue duels, queueing the arena's scheduled duels) runs at most once per poll
interval, however often notifications wake the loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from types import SimpleNamespace
from typing import Any

import pytest

from bot import delivery
from bot.delivery import OutboxDelivery
from tests.bot.helpers import eventually


async def test_notify_wakes_deliver_but_only_timed_rounds_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interval = 0.4
    monkeypatch.setattr(delivery, "POLL_INTERVAL_S", interval)
    loop = OutboxDelivery(bot=SimpleNamespace(), services=SimpleNamespace())  # type: ignore[arg-type]
    timed: list[float] = []
    delivered: list[float] = []

    async def timed_round() -> None:
        timed.append(time.monotonic())

    async def deliver_pending() -> int:
        delivered.append(time.monotonic())
        return 0

    async def notifications() -> None:  # a busy outbox: a NOTIFY every 10 ms
        while True:
            loop.wake.set()
            await asyncio.sleep(0.01)

    fake: Any = loop
    fake.timed_round, fake.deliver_pending, fake._listen = (
        timed_round,
        deliver_pending,
        notifications,
    )
    runner = asyncio.create_task(loop.run())
    try:
        await eventually(lambda: len(timed) >= 3, 20)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    gaps = [later - earlier for earlier, later in itertools.pairwise(timed)]
    assert min(gaps) >= interval
    # Woken far more often than the timed work ran.
    assert len(delivered) > 4 * len(timed)
