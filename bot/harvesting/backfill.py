"""History backfill: walk a harvested channel's history after the last message the bot
processed, through the same idempotent harvest as live events.

It runs after every IDENTIFY (a first start, or a session Discord refused to resume, whose
missed events no RESUME will replay) for each harvested channel that has a last-seen
message, and on ``/hps admin backfill``. Generations already stored are skipped without a
download; number-emoji picks are read from the reactions of the history's messages. A bot
process that runs some of the shards catches up only the channels of its shards' guilds: the
other processes catch up theirs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import discord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.harvesting.outcome import MessageOutcome
from bot.harvesting.watermark import Watermarks
from db.channels import harvested_channels
from db.engine import run_transaction_async

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 2.0
CATCH_UP_LIMIT = 1_000  # messages per chunk of a catch-up walk


@dataclass
class BackfillReport:
    """Counts of one channel's backfill, updated as it goes."""

    channel_id: int
    messages: int = 0
    generations: int = 0
    known: int = 0
    choices: int = 0
    refused: int = 0
    last_message_id: int | None = None
    finished: bool = False

    def count(self, outcome: MessageOutcome) -> None:
        """Count what harvesting did with one more message."""
        if outcome is MessageOutcome.generation:
            self.generations += 1
        elif outcome is MessageOutcome.known:
            self.known += 1
        elif outcome is MessageOutcome.choice:
            self.choices += 1
        elif outcome is MessageOutcome.refused:
            self.refused += 1

    def describe(self) -> str:
        """One line for the admin who asked, or for the log."""
        state = "finished" if self.finished else "in progress"
        return (
            f"backfill of <#{self.channel_id}> {state}: {self.messages} messages read, "
            f"{self.generations} new generations, {self.choices} picks, "
            f"{self.known} already stored, {self.refused} refused"
        )


ProgressCallback = Callable[[BackfillReport], Awaitable[None]]


class LiveHarvest(Protocol):
    """What a backfill needs of live harvesting (the harvest cog is one): the same harvest
    of each message, the same watermarks, the same reaction picks."""

    @property
    def marks(self) -> Watermarks: ...

    async def harvest_message(self, message: discord.Message) -> MessageOutcome: ...

    async def flush_last_seen(self) -> None: ...

    async def history_reaction_picks(self, message: discord.Message) -> int: ...


def served_guild_ids(client: discord.Client) -> list[int] | None:
    """The guilds whose channels this bot process harvests (its shards' guilds), or None for
    all of them (it runs every shard, or it is not a sharded client)."""
    served = getattr(client, "served_guild_ids", None)
    return served() if callable(served) else None


class Backfiller:
    """Walks harvested channels' histories through ``harvest``: on an admin's request
    (:meth:`channel`) and after every IDENTIFY (:meth:`start_catch_up`)."""

    def __init__(
        self,
        client: discord.Client,
        factory: async_sessionmaker[AsyncSession],
        harvest: LiveHarvest,
    ) -> None:
        self.client = client
        self.factory = factory
        self.harvest = harvest
        self._locks: dict[int, asyncio.Lock] = {}
        self._catch_up: asyncio.Task[list[BackfillReport]] | None = None
        self._again = False

    async def channel(
        self,
        channel: discord.abc.Messageable,
        *,
        after: int | None,
        limit: int | None = None,
        progress: ProgressCallback | None = None,
        catch_up: bool = False,
    ) -> BackfillReport:
        """Harvest ``channel``'s messages newer than ``after`` (all when None), oldest first,
        at most ``limit``; ``progress`` is called every few seconds and at the end. A
        ``catch_up`` walk holds the channel's watermark at its position until it is done."""
        channel_id = int(getattr(channel, "id", 0))
        report = BackfillReport(channel_id)
        marks = self.harvest.marks
        lock = self._locks.setdefault(channel_id, asyncio.Lock())
        async with lock:  # one walk per channel at a time (catch-up vs an admin's backfill)
            if catch_up and after is not None:
                marks.walking(channel_id, after)
            last_progress = time.monotonic()
            start = discord.Object(after) if after is not None else None
            async for message in channel.history(limit=limit, after=start, oldest_first=True):
                await self._one(message, report)
                if catch_up:
                    marks.walking(channel_id, message.id)
                if progress is not None and time.monotonic() - last_progress > PROGRESS_INTERVAL_S:
                    last_progress = time.monotonic()
                    await progress(report)
            if catch_up and (limit is None or report.messages < limit):
                marks.walked(channel_id)  # reached the newest message
            await self.harvest.flush_last_seen()
        report.finished = True
        if progress is not None:
            await progress(report)
        return report

    async def _one(self, message: discord.Message, report: BackfillReport) -> None:
        report.messages += 1
        report.last_message_id = message.id
        if message.author == self.client.user:
            self.harvest.marks.saw(message.channel.id, message.id)
            return
        outcome = await self.harvest.harvest_message(message)
        report.count(outcome)
        if outcome in (MessageOutcome.generation, MessageOutcome.known):
            report.choices += await self.harvest.history_reaction_picks(message)

    def start_catch_up(self) -> None:
        """Backfill every harvested channel from its last seen message, in the background
        (called on READY; if a catch-up is running, another pass follows it)."""
        if self._catch_up is not None and not self._catch_up.done():
            self._again = True
            return
        self._catch_up = asyncio.create_task(self._catch_up_passes(), name="history-catch-up")

    def stop(self) -> None:
        """Cancel a running catch-up (the bot is closing; the watermark keeps its place)."""
        if self._catch_up is not None:
            self._catch_up.cancel()

    async def _catch_up_passes(self) -> list[BackfillReport]:
        reports = await self.catch_up()
        while self._again:
            self._again = False
            reports += await self.catch_up()
        return reports

    async def catch_up(self) -> list[BackfillReport]:
        """Backfill each harvested channel that has a last seen message, to its newest
        message; return the reports (one per channel and chunk walked). Only the channels of
        the guilds this process serves (its shards'), when it does not run every shard."""
        guild_ids = served_guild_ids(self.client)
        if guild_ids is not None and not guild_ids:
            return []  # shards without a guild: nothing of this process to catch up
        channels = await run_transaction_async(
            self.factory, partial(harvested_channels, guild_ids=guild_ids)
        )
        reports: list[BackfillReport] = []
        for channel_id, _adapter, last_seen, _guild_id in channels:
            if last_seen is None:
                continue  # never harvested yet: an admin decides how far back to go
            try:
                await self._catch_up_channel(channel_id, last_seen, reports)
            except Exception:  # one channel's trouble must not stop the others
                metrics.count_error("catch_up")
                log.exception("catch-up of channel %s stopped; the next one resumes", channel_id)
        return reports

    async def _catch_up_channel(
        self, channel_id: int, last_seen: int, reports: list[BackfillReport]
    ) -> None:
        """Walk one channel from ``last_seen`` to its newest message, appending a report
        per chunk to ``reports`` as it goes."""
        channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise TypeError(f"channel {channel_id} has no message history")
        after: int | None = last_seen
        while True:  # in chunks, so that a huge gap shows progress in the log
            report = await self.channel(channel, after=after, limit=CATCH_UP_LIMIT, catch_up=True)
            reports.append(report)
            if report.messages:
                log.info("%s", report.describe())
            if report.messages < CATCH_UP_LIMIT:
                return
            after = report.last_message_id

    async def wait_for_catch_up(self) -> list[BackfillReport]:
        """The reports of the catch-up in progress or last run (tests and the demo)."""
        return await self._catch_up if self._catch_up is not None else []
