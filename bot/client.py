"""The HPS Discord bot: a discord.py client wired to the database, the image store and the
job queue (by task name only; the bot process never loads torch)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import aiohttp
import discord
from discord.ext import commands

from bot import metrics
from bot.cogs.commands import HpsCommands
from bot.cogs.harvest import HarvestCog
from bot.delivery import OutboxDelivery
from bot.harvest import Harvester, purge_unreferenced
from bot.picks import PickButton
from bot.progress import JobProgressWatcher
from config import Settings
from db.engine import (
    make_async_engine,
    make_async_session_factory,
    make_engine,
    make_session_factory,
)
from jobqueue.app import make_celery
from media.store import open_store

log = logging.getLogger(__name__)


def point_at(settings: Settings) -> None:
    """Use the configured Discord endpoints (Discord itself by default, or an emulator)."""
    import discord.gateway
    import discord.http
    import yarl

    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


class HpsBot(commands.Bot):
    def __init__(self, settings: Settings) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: needed to read other bots' generations
        intents.members = False
        # Nothing the bot posts pings anyone unless that post allows it explicitly (results
        # allow their requester's mention only: bot.formatting.only_pings).
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings = settings
        point_at(settings)
        self.engine = make_async_engine(settings.database_url)
        self.factory = make_async_session_factory(self.engine)
        self.sync_factory = make_session_factory(make_engine(settings.database_url))
        self.store = open_store(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)
        self.celery = make_celery(settings)  # a client: tasks are sent by name
        self.http_session: aiohttp.ClientSession | None = None
        self.delivery = OutboxDelivery(self)
        self.job_progress = JobProgressWatcher(self)
        self._delivery_task: asyncio.Task[None] | None = None
        self.intake_pool: ProcessPoolExecutor | None = None

    async def setup_hook(self) -> None:
        metrics.start_metrics_server(self.settings.bot_metrics_port)
        self.tree.error(self.on_app_command_error)
        self.http_session = aiohttp.ClientSession()
        harvester = Harvester(self.settings, self.factory, self.store, self.http_session)
        harvester.intake_pool = self.intake_pool = ProcessPoolExecutor(
            max_workers=max(1, min(4, os.cpu_count() or 1)),
            mp_context=multiprocessing.get_context("spawn"),
        )
        # Start the intake processes now, not on the first message (spawning takes seconds).
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self.intake_pool, os.getpid) for _ in range(os.cpu_count() or 1))
        )
        await self.add_cog(HarvestCog(self, harvester))
        await self.add_cog(HpsCommands(self))
        self.add_dynamic_items(PickButton)  # pick buttons keep working across restarts
        await self.tree.sync()
        self._delivery_task = asyncio.create_task(self.delivery.run(), name="outbox-delivery")

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: discord.app_commands.AppCommandError
    ) -> None:
        """An unexpected error in a command: a short private apology for the user, the
        details in the log for admins, a count in the metrics."""
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

    async def purge_blobs(self, shas: list[str]) -> int:
        """Delete blobs no image row references any more; return the count."""
        return await purge_unreferenced(self.factory, self.store, shas)

    async def close(self) -> None:
        if self._delivery_task is not None:
            self._delivery_task.cancel()
        self.job_progress.stop()
        if self.intake_pool is not None:
            self.intake_pool.shutdown(wait=False, cancel_futures=True)
        await super().close()
        if self.http_session is not None:
            await self.http_session.close()
        await self.engine.dispose()
