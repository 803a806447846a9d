"""Passive harvesting in the channels an admin enabled: generator messages become generations,
the requester's number-emoji reaction becomes their pick, deleted messages take their data."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from functools import partial

import discord
from discord.ext import commands

from bot import metrics
from bot.adapters import midjourney, multi_attachment
from bot.adapters.base import AttachmentRef, ParsedChoice
from bot.backfill import Backfiller
from bot.harvest import Harvester
from bot.watermark import Watermarks
from db.channels import advance_last_seen, harvest_adapter
from db.engine import run_transaction_async
from db.models import ChoiceMethod

log = logging.getLogger(__name__)
CONFIG_TTL_S = 30.0
LAST_SEEN_FLUSH_S = 5.0


class MessageOutcome(enum.Enum):
    """What harvesting did with one message."""

    not_harvested = "channel not harvested"
    ignored = "not a generation"
    generation = "generation stored"
    known = "generation already stored"
    choice = "choice recorded"
    refused = "refused"
    retry = "failed for now (a timeout, the CDN or the database away)"


def interaction_user(message: discord.Message) -> int | None:
    """The user whose slash command this message answers (Discord says so, not the text)."""
    metadata = message.interaction_metadata
    return metadata.user.id if metadata is not None else None


def replied_user(message: discord.Message) -> int | None:
    """The (human) author of the message this one replies to, if Discord resolved it."""
    reference = message.reference
    resolved = reference.resolved if reference is not None else None
    if isinstance(resolved, discord.Message) and not resolved.author.bot:
        return resolved.author.id
    return None


class HarvestCog(commands.Cog):
    def __init__(self, bot: commands.Bot | commands.AutoShardedBot, harvester: Harvester) -> None:
        self.bot = bot
        self.harvester = harvester
        self._adapters: dict[int, tuple[float, str | None]] = {}
        self._adapter_queries: dict[int, asyncio.Future[str | None]] = {}
        self._config_epoch = 0
        self.marks = Watermarks()
        self.backfiller = Backfiller(bot, self)
        self._flusher: asyncio.Task[None] | None = None
        self._identified = False

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

    async def adapter_for(self, channel_id: int) -> str | None:
        """The channel's adapter (cached for a short while), None when not harvested."""
        cached = self._adapters.get(channel_id)
        if cached and time.monotonic() - cached[0] < CONFIG_TTL_S:
            return cached[1]
        # One query per channel at a time: a burst of messages waits for the same answer
        # instead of sending the database one query each.
        pending = self._adapter_queries.get(channel_id)
        if pending is None:
            pending = asyncio.ensure_future(self._query_adapter(channel_id))
            self._adapter_queries[channel_id] = pending
            pending.add_done_callback(partial(self._query_done, channel_id))
        return await asyncio.shield(pending)

    def _query_done(self, channel_id: int, query: asyncio.Future[str | None]) -> None:
        if self._adapter_queries.get(channel_id) is query:
            del self._adapter_queries[channel_id]

    async def _query_adapter(self, channel_id: int) -> str | None:
        epoch = self._config_epoch
        adapter = await run_transaction_async(
            self.harvester.factory, lambda session: harvest_adapter(session, channel_id)
        )
        if epoch == self._config_epoch:  # not read before an admin's change
            self._adapters[channel_id] = (time.monotonic(), adapter)
        return adapter

    def forget_channel_config(self) -> None:
        """Drop cached channel settings (after an admin changed them)."""
        self._adapters.clear()
        self._adapter_queries.clear()  # a query in flight may have read the old settings
        self._config_epoch += 1

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is None or message.author == self.bot.user:
            return
        await self.harvest_message(message)

    def saw(self, channel_id: int, message_id: int) -> None:
        """``message_id`` needs nothing more (see :mod:`bot.watermark`)."""
        self.marks.saw(channel_id, message_id)

    async def flush_last_seen(self) -> None:
        """Write each channel's watermark: where a catch-up after a restart starts."""
        marks = self.marks.unwritten()
        if marks:
            await run_transaction_async(
                self.harvester.factory, partial(advance_last_seen, seen=marks)
            )
            self.marks.written.update(marks)

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
        adapter = await self.adapter_for(message.channel.id)
        if adapter not in (multi_attachment.NAME, midjourney.NAME):
            return MessageOutcome.not_harvested
        attachments = [
            AttachmentRef(a.url, a.filename, a.size, a.content_type) for a in message.attachments
        ]
        bot_author = message.author.bot
        if adapter == midjourney.NAME:
            reference = message.reference.message_id if message.reference else None
            choice = midjourney.parse_upscale(
                message.content,
                author_is_bot=bot_author,
                message_id=message.id,
                referenced_message_id=reference,
            )
            if choice is not None:
                recorded = await self.harvester.choice(choice, ChoiceMethod.upscale)
                return MessageOutcome.choice if recorded else MessageOutcome.refused
            parsed = midjourney.parse_grid(
                message.content,
                attachments,
                author_is_bot=bot_author,
                interaction_user_id=interaction_user(message),
            )
        else:
            parsed = multi_attachment.parse_message(
                message.content,
                attachments,
                author_is_bot=bot_author,
                interaction_user_id=interaction_user(message),
                replied_user_id=replied_user(message),
            )
        if parsed is None:
            return MessageOutcome.ignored
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
        metrics.count_event(adapter)
        return MessageOutcome.generation

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is None or payload.user_id == getattr(self.bot.user, "id", None):
            return
        position = multi_attachment.position_of(str(payload.emoji))
        if position is None or await self.adapter_for(payload.channel_id) != multi_attachment.NAME:
            return
        await self.harvester.settled(payload.message_id)  # a reaction quicker than the download
        requester = await self.requester(payload.message_id)
        if requester != payload.user_id:
            return  # only the requester's pick counts (and none on an unknown generation)
        await self.harvester.choice(
            ParsedChoice(payload.message_id, payload.user_id, position), ChoiceMethod.reaction
        )

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        """The requester took a number reaction back: their pick is what remains."""
        if payload.guild_id is None or multi_attachment.position_of(str(payload.emoji)) is None:
            return
        await self._reread_pick(payload.channel_id, payload.message_id, payload.user_id)

    @commands.Cog.listener()
    async def on_raw_reaction_clear(self, payload: discord.RawReactionClearEvent) -> None:
        """Every reaction was removed: the requester's pick with them."""
        await self._reread_pick(payload.channel_id, payload.message_id, None)

    @commands.Cog.listener()
    async def on_raw_reaction_clear_emoji(
        self, payload: discord.RawReactionClearEmojiEvent
    ) -> None:
        """Every reaction of one emoji was removed (a moderator's doing)."""
        if multi_attachment.position_of(str(payload.emoji)) is None:
            return
        await self._reread_pick(payload.channel_id, payload.message_id, None)

    async def _reread_pick(self, channel_id: int, message_id: int, user_id: int | None) -> None:
        """Make the stored reaction pick of ``message_id`` what its reactions say now (only
        when ``user_id``, if given, is the requester)."""
        if await self.adapter_for(channel_id) != multi_attachment.NAME:
            return
        await self.harvester.settled(message_id)
        requester = await self.requester(message_id)
        if requester is None or (user_id is not None and user_id != requester):
            return
        channel = self.bot.get_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            return
        try:
            message = await channel.fetch_message(message_id)
        except discord.NotFound:
            return  # deleted: its delete event takes the data
        except discord.HTTPException as exc:  # no access any more, Discord down: log it
            metrics.count_error("reaction_reread")
            log.warning("reactions of message %s not read again: %s", message_id, exc)
            return
        await self.sync_reaction_pick(message, requester)

    async def sync_reaction_pick(
        self, message: discord.Message, requester: int, *, fresh: bool = True
    ) -> int:
        """Record the requester's number-emoji pick as the reactions on ``message`` show it,
        or withdraw their reaction pick when none remains; the live events and the history
        backfill both decide through here. A ``message`` read from history (not ``fresh``)
        may predate a reaction already recorded live, so it is fetched again before a pick is
        withdrawn. Returns 1 if a pick is stored afterwards."""
        positions = await self._positions_of(message, requester)
        if not positions and not fresh:
            if not await self.harvester.has_reaction_pick(message.id, requester):
                return 0
            try:
                message = await message.channel.fetch_message(message.id)
            except discord.NotFound:
                return 0  # deleted: its delete event takes the data
            positions = await self._positions_of(message, requester)
        return int(await self.harvester.reaction_pick(message.id, requester, positions))

    @staticmethod
    async def _positions_of(message: discord.Message, user_id: int) -> list[int]:
        """The images ``user_id`` reacts to ``message`` with a number emoji for."""
        positions = []
        for reaction in message.reactions:
            position = multi_attachment.position_of(str(reaction.emoji))
            if position is None:
                continue
            async for user in reaction.users():
                if user.id == user_id:
                    positions.append(position)
                    break
        return sorted(positions)

    async def requester(self, message_id: int) -> int | None:
        """Who asked for the generation posted in ``message_id`` (None if unknown)."""
        from sqlalchemy import select

        from db.models import Generation

        return await run_transaction_async(
            self.harvester.factory,
            lambda session: session.scalar(
                select(Generation.requester_id).where(Generation.source_message_id == message_id)
            ),
        )

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.harvester.settled(payload.message_id)  # deleted while being harvested
        await self.harvester.deleted([payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:
            await self.harvester.settled(message_id)
        await self.harvester.deleted(sorted(payload.message_ids))
