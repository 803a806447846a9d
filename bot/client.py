"""The HPS Discord bot: a discord.py client wired to the database, the image store and the
job queue (by task name only; the bot process never loads torch).

It is a sharded client. ``SHARD_COUNT`` and ``SHARD_IDS`` split the gateway shards over
several bot processes: each runs the shards it is given (all of ``SHARD_COUNT`` without
``SHARD_IDS``; with neither, the count Discord recommends in GET /gateway/bot) and so receives
the events of those shards' guilds only, ``(guild_id >> 22) % SHARD_COUNT``. Each process
harvests and catches up the guilds of its own shards; job results are posted by whichever
process claims their outbox row first (REST works from any process), exactly once."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import discord
from discord.ext import commands

from bot import metrics
from bot.arena import DuelButton
from bot.arena_channel import ArenaChannelCog
from bot.checks import answer_refusal
from bot.cogs.commands import HpsCommands
from bot.delivery import OutboxDelivery
from bot.harvesting.cog import HarvestCog, harvest_cog
from bot.harvesting.harvester import Harvester, start_intake_pool
from bot.picks import PickButton
from bot.services import BotServices
from config import Settings

log = logging.getLogger(__name__)
CLOSE_STEP_TIMEOUT_S = 10.0


def point_at(settings: Settings) -> None:
    """Use the configured Discord endpoints (Discord itself by default, or an emulator)."""
    import discord.gateway
    import discord.http
    import yarl

    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def shard_of(guild_id: int, shard_count: int) -> int:
    """The gateway shard that receives ``guild_id``'s events (Discord's sharding formula)."""
    return (guild_id >> 22) % shard_count


class HpsBot(commands.AutoShardedBot):
    """The bot process: its services (``self.services``), the harvest cog, the slash
    commands, the persistent pick buttons and the outbox delivery."""

    def __init__(self, settings: Settings) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: needed to read other bots' generations
        intents.members = False
        # SHARD_IDS empty: every shard of SHARD_COUNT (or of Discord's recommendation).
        sharding: dict[str, Any] = {"shard_count": settings.shard_count}
        if settings.shard_ids:
            sharding["shard_ids"] = list(settings.shard_ids)
        # Nothing the bot posts pings anyone unless that post allows it explicitly (results
        # allow their requester's mention only: bot.formatting.only_pings).
        # Slash commands only: no prefix commands, so no built-in "@bot help" reply either.
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            **sharding,
        )
        self.settings = settings
        self.services = BotServices(settings)
        self._all_shards_ready = False
        point_at(settings)
        self.delivery = OutboxDelivery(self, self.services)
        self._delivery_task: asyncio.Task[None] | None = None
        self.intake_pool: ProcessPoolExecutor | None = None

    async def setup_hook(self) -> None:
        metrics.start_metrics_server(self.settings.bot_metrics_port)
        self.tree.error(self.on_app_command_error)
        harvester = Harvester(
            self.settings, self.services.async_factory, self.services.store, self.services.http
        )
        harvester.intake_pool = self.intake_pool = await start_intake_pool()
        await self.add_cog(HarvestCog(self, harvester))
        await self.add_cog(HpsCommands(self, self.services))
        await self.add_cog(ArenaChannelCog(self, self.services))
        self.add_dynamic_items(PickButton, DuelButton)  # buttons keep working across restarts
        await self.tree.sync()
        self._delivery_task = asyncio.create_task(self.delivery.run(), name="outbox-delivery")

    def serves_guild(self, guild_id: int) -> bool:
        """Whether ``guild_id``'s events come to this process (one of its shards holds it)."""
        if not self.shard_ids or not self.shard_count:
            return True  # this process runs every shard
        return shard_of(guild_id, self.shard_count) in self.shard_ids

    def served_guild_ids(self) -> list[int] | None:
        """The guilds this process harvests: those of its shards that Discord sent it (READY
        lists every guild of a shard, available or not). None when it runs every shard."""
        if not self.shard_ids:
            return None
        return [guild.id for guild in self.guilds if self.serves_guild(guild.id)]

    async def on_shard_ready(self, shard_id: int) -> None:
        guilds = [g.id for g in self.guilds if g.shard_id == shard_id]
        log.info(
            "shard %d of %s ready: %d guilds %s",
            shard_id,
            self.shard_count,
            len(guilds),
            sorted(guilds) if len(guilds) <= 20 else "",
        )
        # discord.py dispatches READY once all of this process's shards are up; a shard that
        # had to IDENTIFY again later (its session could not be resumed) only gets here, and
        # the events it missed are only in the channel history: catch up again.
        if self._all_shards_ready and len(self.shards) > 1:
            metrics.count_reconnect()
            harvest = harvest_cog(self)
            if harvest is not None:
                harvest.backfiller.start_catch_up()

    async def on_ready(self) -> None:
        self._all_shards_ready = True
        log.info(
            "bot ready: shards %s of %s, %d guilds",
            sorted(self.shards),
            self.shard_count,
            len(self.guilds),
        )

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: discord.app_commands.AppCommandError
    ) -> None:
        """An unexpected error in a command: a short private apology for the user, the
        details in the log for admins, a count in the metrics."""
        if await answer_refusal(interaction, error):
            return
        metrics.count_error("command")
        log.error(
            "command %s failed", getattr(interaction.command, "qualified_name", "?"), exc_info=error
        )
        text = "Sorry, something went wrong on my side; the admins can find it in the logs."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            pass  # the interaction is gone; the log has it

    async def close(self) -> None:
        if self._delivery_task is not None:
            self._delivery_task.cancel()
            # Let the cancelled delivery finish unwinding its database session while the
            # loop still runs: a connection torn down later, inside asyncio.run's final
            # cancel-everything pass, can leave aiosqlite waiting forever on a worker thread
            # that has already stopped (seen as a hung `hps bot` exit on SQLite).
            await asyncio.wait({self._delivery_task}, timeout=CLOSE_STEP_TIMEOUT_S)
        self.services.job_progress.stop()
        if self.intake_pool is not None:
            self.intake_pool.shutdown(wait=False, cancel_futures=True)
        await super().close()
        await self.services.aclose(CLOSE_STEP_TIMEOUT_S)
