"""Picks made by reacting to a generation (a number emoji under the multi-attachment
adapter): only the requester's reactions count, and their pick is whatever their reactions
say now. The live reaction events and the history backfill decide through here."""

from __future__ import annotations

import logging

import discord

from bot import metrics
from bot.harvesting.adapters import reaction_may_pick
from bot.harvesting.adapters.base import Adapter, ParsedChoice
from bot.harvesting.channel_adapters import ChannelAdapters
from bot.harvesting.harvester import Harvester
from db.engine import run_transaction_async
from db.ingest import generation_requester

log = logging.getLogger(__name__)


async def positions_of(message: discord.Message, user_id: int, adapter: Adapter) -> list[int]:
    """The images ``user_id`` picks on ``message`` with their reactions, in order."""
    positions = []
    for reaction in message.reactions:
        position = adapter.reaction_position(str(reaction.emoji))
        if position is None:
            continue
        async for user in reaction.users():
            if user.id == user_id:
                positions.append(position)
                break
    return sorted(positions)


class ReactionPicks:
    """Records and withdraws the requester's reaction picks."""

    def __init__(
        self, client: discord.Client, harvester: Harvester, adapters: ChannelAdapters
    ) -> None:
        self.client = client
        self.harvester = harvester
        self.adapters = adapters

    async def requester(self, message_id: int) -> int | None:
        """Who asked for the generation posted in ``message_id`` (None if unknown)."""
        return await run_transaction_async(
            self.harvester.factory,
            lambda session: generation_requester(session, source_message_id=message_id),
        )

    async def _reacting_adapter(self, channel_id: int, emoji: str | None) -> Adapter | None:
        """The channel's adapter if reactions (with ``emoji``, when given) are picks there."""
        if emoji is not None and not reaction_may_pick(emoji):
            return None  # no database lookup for the everyday emoji
        adapter = await self.adapters.of(channel_id)
        if adapter is None or not adapter.picks_by_reaction:
            return None
        if emoji is not None and adapter.reaction_position(emoji) is None:
            return None
        return adapter

    async def added(self, payload: discord.RawReactionActionEvent) -> None:
        """A reaction was added: the requester's pick if it is a pick emoji of the channel."""
        adapter = await self._reacting_adapter(payload.channel_id, str(payload.emoji))
        position = adapter.reaction_position(str(payload.emoji)) if adapter else None
        if position is None:
            return
        await self.harvester.settled(payload.message_id)  # a reaction quicker than the download
        requester = await self.requester(payload.message_id)
        if requester != payload.user_id:
            return  # only the requester's pick counts (and none on an unknown generation)
        await self.harvester.choice(ParsedChoice(payload.message_id, payload.user_id, position))

    async def reread(self, channel_id: int, message_id: int, user_id: int | None) -> None:
        """Make the stored reaction pick of ``message_id`` what its reactions say now (only
        when ``user_id``, if given, is the requester)."""
        adapter = await self._reacting_adapter(channel_id, None)
        if adapter is None:
            return
        await self.harvester.settled(message_id)
        requester = await self.requester(message_id)
        if requester is None or (user_id is not None and user_id != requester):
            return
        channel = self.client.get_channel(channel_id)
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
        await self.sync(message, adapter, requester)

    async def from_history(self, message: discord.Message) -> int:
        """The requester's pick on a generation read from history, as its reactions show it
        now (the same decision as the live reaction events); returns 1 if one is stored."""
        adapter = await self._reacting_adapter(message.channel.id, None)
        if adapter is None:
            return 0  # reactions are picks only where the adapter says so
        requester = await self.requester(message.id)
        if requester is None:
            return 0
        return await self.sync(message, adapter, requester, fresh=False)

    async def sync(
        self, message: discord.Message, adapter: Adapter, requester: int, *, fresh: bool = True
    ) -> int:
        """Record the requester's pick as the reactions on ``message`` show it, or withdraw
        their reaction pick when none remains. A ``message`` read from history (not
        ``fresh``) may predate a reaction already recorded live, so it is fetched again
        before a pick is withdrawn. Returns 1 if a pick is stored afterwards."""
        positions = await positions_of(message, requester, adapter)
        if not positions and not fresh:
            if not await self.harvester.has_reaction_pick(message.id, requester):
                return 0
            try:
                message = await message.channel.fetch_message(message.id)
            except discord.NotFound:
                return 0  # deleted: its delete event takes the data
            positions = await positions_of(message, requester, adapter)
        return int(await self.harvester.reaction_pick(message.id, requester, positions))
