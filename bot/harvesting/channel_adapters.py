"""Which adapter harvests a channel, as admins configured it, cached for a short while."""

from __future__ import annotations

import asyncio
import time
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.harvesting.adapters import adapter_named
from bot.harvesting.adapters.base import Adapter
from db.channels import harvest_adapter
from db.engine import run_transaction_async

CONFIG_TTL_S = 30.0


class ChannelAdapters:
    """The adapter of each harvested channel (None: not harvested), read from the database
    at most once per channel and ``CONFIG_TTL_S``, and at once after :meth:`forget`."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self.factory = factory
        self._adapters: dict[int, tuple[float, str | None]] = {}
        self._queries: dict[int, asyncio.Future[str | None]] = {}
        self._epoch = 0

    async def of(self, channel_id: int) -> Adapter | None:
        """The channel's adapter, None when the channel is not harvested (or its adapter is
        not one this bot knows)."""
        return adapter_named(await self.name_of(channel_id))

    async def name_of(self, channel_id: int) -> str | None:
        """The name of the channel's adapter (cached for a short while), None when not
        harvested."""
        cached = self._adapters.get(channel_id)
        if cached and time.monotonic() - cached[0] < CONFIG_TTL_S:
            return cached[1]
        # One query per channel at a time: a burst of messages waits for the same answer
        # instead of sending the database one query each.
        pending = self._queries.get(channel_id)
        if pending is None:
            pending = asyncio.ensure_future(self._query(channel_id))
            self._queries[channel_id] = pending
            pending.add_done_callback(partial(self._query_done, channel_id))
        return await asyncio.shield(pending)

    def _query_done(self, channel_id: int, query: asyncio.Future[str | None]) -> None:
        if self._queries.get(channel_id) is query:
            del self._queries[channel_id]

    async def _query(self, channel_id: int) -> str | None:
        epoch = self._epoch
        adapter = await run_transaction_async(
            self.factory, lambda session: harvest_adapter(session, channel_id)
        )
        if epoch == self._epoch:  # not read before an admin's change
            self._adapters[channel_id] = (time.monotonic(), adapter)
        return adapter

    def forget(self) -> None:
        """Drop cached channel settings (after an admin changed them)."""
        self._adapters.clear()
        self._queries.clear()  # a query in flight may have read the old settings
        self._epoch += 1
