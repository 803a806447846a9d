"""Passive harvesting in the channels an admin enabled: generator messages become generations,
the requester's number-emoji reaction becomes their pick, deleted messages take their data."""

from __future__ import annotations

import logging
import time

import discord
from discord.ext import commands

from bot.adapters import midjourney, multi_attachment
from bot.adapters.base import AttachmentRef, ParsedChoice
from bot.harvest import Harvester
from db.channels import harvest_adapter
from db.engine import run_transaction_async
from db.models import ChoiceMethod

log = logging.getLogger(__name__)
CONFIG_TTL_S = 30.0


class HarvestCog(commands.Cog):
    def __init__(self, bot: commands.Bot, harvester: Harvester) -> None:
        self.bot = bot
        self.harvester = harvester
        self._adapters: dict[int, tuple[float, str | None]] = {}

    async def adapter_for(self, channel_id: int) -> str | None:
        """The channel's adapter (cached for a short while), None when not harvested."""
        cached = self._adapters.get(channel_id)
        if cached and time.monotonic() - cached[0] < CONFIG_TTL_S:
            return cached[1]
        adapter = await run_transaction_async(
            self.harvester.factory, lambda session: harvest_adapter(session, channel_id)
        )
        self._adapters[channel_id] = (time.monotonic(), adapter)
        return adapter

    def forget_channel_config(self) -> None:
        """Drop cached channel settings (after an admin changed them)."""
        self._adapters.clear()

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is None or message.author == self.bot.user:
            return
        adapter = await self.adapter_for(message.channel.id)
        if adapter not in (multi_attachment.NAME, midjourney.NAME):
            return
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
                await self.harvester.choice(choice, ChoiceMethod.upscale)
                return
            parsed = midjourney.parse_grid(message.content, attachments, author_is_bot=bot_author)
        else:
            parsed = multi_attachment.parse_message(
                message.content, attachments, author_is_bot=bot_author
            )
        if parsed is None:
            return
        await self.harvester.generation(
            parsed,
            message_id=message.id,
            channel_id=message.channel.id,
            guild_id=message.guild.id,
            generator=f"discord-bot:{message.author.id}",
        )

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is None or payload.user_id == getattr(self.bot.user, "id", None):
            return
        position = multi_attachment.position_of(str(payload.emoji))
        if position is None or await self.adapter_for(payload.channel_id) != multi_attachment.NAME:
            return
        requester = await self._requester(payload.channel_id, payload.message_id)
        if requester is not None and requester != payload.user_id:
            return  # only the requester's pick counts for this adapter
        await self.harvester.choice(
            ParsedChoice(payload.message_id, payload.user_id, position), ChoiceMethod.reaction
        )

    async def _requester(self, channel_id: int, message_id: int) -> int | None:
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
        await self.harvester.deleted([payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self.harvester.deleted(sorted(payload.message_ids))
