"""Passive harvesting in the channels an admin enabled: generator messages become generations,
the requester's picks become choices, deleted messages take their data."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import discord
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.harvesting.adapters import reaction_may_pick
from bot.harvesting.adapters.base import ParsedChoice
from bot.harvesting.backfill import Backfiller
from bot.harvesting.channel_adapters import ChannelAdapters
from bot.harvesting.harvester import Harvester
from bot.harvesting.messages import generator_message
from bot.harvesting.outcome import MessageOutcome
from bot.harvesting.reactions import ReactionPicks
from bot.harvesting.watermark import Watermarks
from bot.services import DiscordBot
from db.channels import advance_last_seen
from db.engine import run_transaction_async

log = logging.getLogger(__name__)
LAST_SEEN_FLUSH_S = 5.0


class HarvestCog(commands.Cog):
    """Listens to the gateway: messages, reactions and deletions in harvested channels."""

    def __init__(self, bot: DiscordBot, harvester: Harvester) -> None:
        self.bot = bot
        self.harvester = harvester
        self.adapters = ChannelAdapters(harvester.factory)
        self.reactions = ReactionPicks(bot, harvester, self.adapters)
        self.marks = Watermarks()  # where a catch-up after a restart starts (see .watermark)
        self.backfiller = Backfiller(bot, harvester.factory, self)
        self._flusher: asyncio.Task[None] | None = None
        self._identified = False

    @property
    def factory(self) -> async_sessionmaker[AsyncSession]:
        return self.harvester.factory

    async def cog_load(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name="last-seen-flush")

    async def cog_unload(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self.backfiller.stop()
        try:
            await self.flush_last_seen()
        except Exception as exc:  # shutting down: the next catch-up re-reads a little more
            log.warning("last seen message ids not saved: %s", exc)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(LAST_SEEN_FLUSH_S)
            try:
                await self.flush_last_seen()
            except Exception as exc:
                metrics.count_error("last_seen_flush")
                log.warning("last seen message ids not saved yet: %s", exc)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        # READY follows every IDENTIFY: a first start or a session that could not be resumed.
        # Either way events were missed that only the channel history still has.
        if self._identified:
            metrics.count_reconnect()
        self._identified = True
        self.backfiller.start_catch_up()

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        metrics.count_reconnect()

    def forget_channel_config(self) -> None:
        """Drop cached channel settings (after an admin changed them)."""
        self.adapters.forget()

    async def flush_last_seen(self) -> None:
        """Write each channel's watermark: where a catch-up after a restart starts."""
        marks = self.marks.unwritten()
        if marks:
            await run_transaction_async(self.factory, partial(advance_last_seen, seen=marks))
            self.marks.written.update(marks)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is None or message.author == self.bot.user:
            return
        await self.harvest_message(message)

    async def harvest_message(self, message: discord.Message) -> MessageOutcome:
        """Harvest one message (live or from history) with its channel's adapter."""
        channel_id = message.channel.id
        self.marks.hold(channel_id, message.id)
        outcome = MessageOutcome.retry  # also when an unexpected error escapes
        try:
            # Tracked from the first moment, so that a pick arriving while this message is
            # still being looked at waits for it instead of finding no generation.
            async with self.harvester.tracking(message.id):
                outcome = await self._harvest(message)
        finally:
            self.marks.release(
                channel_id,
                message.id,
                done=outcome is not MessageOutcome.retry,
                harvested=outcome is not MessageOutcome.not_harvested,
            )
        return outcome

    async def _harvest(self, message: discord.Message) -> MessageOutcome:
        adapter = await self.adapters.of(message.channel.id)
        if adapter is None:
            return MessageOutcome.not_harvested
        parsed = adapter.read(generator_message(message))
        if parsed is None:
            return MessageOutcome.ignored
        if isinstance(parsed, ParsedChoice):
            recorded = await self.harvester.choice(parsed)
            return MessageOutcome.choice if recorded else MessageOutcome.refused
        outcome = await self.harvester.generation(
            parsed,
            message_id=message.id,
            channel_id=message.channel.id,
            guild_id=message.guild.id if message.guild else None,
            generator=f"discord-bot:{message.author.id}",
        )
        if not outcome.stored:
            return MessageOutcome.retry if outcome.temporary else MessageOutcome.refused
        if not outcome.new:
            return MessageOutcome.known
        metrics.count_event(adapter.name)
        return MessageOutcome.generation

    async def history_reaction_picks(self, message: discord.Message) -> int:
        """The requester's reaction pick on a generation read from history (1 if stored)."""
        return await self.reactions.from_history(message)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is None or payload.user_id == getattr(self.bot.user, "id", None):
            return
        await self.reactions.added(payload)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        """The requester took a pick reaction back: their pick is what remains."""
        if payload.guild_id is None or not reaction_may_pick(str(payload.emoji)):
            return
        await self.reactions.reread(payload.channel_id, payload.message_id, payload.user_id)

    @commands.Cog.listener()
    async def on_raw_reaction_clear(self, payload: discord.RawReactionClearEvent) -> None:
        """Every reaction was removed: the requester's pick with them."""
        await self.reactions.reread(payload.channel_id, payload.message_id, None)

    @commands.Cog.listener()
    async def on_raw_reaction_clear_emoji(
        self, payload: discord.RawReactionClearEmojiEvent
    ) -> None:
        """Every reaction of one emoji was removed (a moderator's doing)."""
        if not reaction_may_pick(str(payload.emoji)):
            return
        await self.reactions.reread(payload.channel_id, payload.message_id, None)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.harvester.settled(payload.message_id)  # deleted while being harvested
        await self.harvester.deleted([payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:
            await self.harvester.settled(message_id)
        await self.harvester.deleted(sorted(payload.message_ids))


def harvest_cog(bot: DiscordBot) -> HarvestCog | None:
    """The bot's harvest cog (None before it is loaded)."""
    cog = bot.get_cog(HarvestCog.__cog_name__)
    return cog if isinstance(cog, HarvestCog) else None
