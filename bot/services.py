"""What the bot's cogs and components work with, typed: one :class:`BotServices` per bot
process, held by :class:`bot.client.HpsBot` as ``bot.services``.

A cog or component takes the services it needs in its constructor (``HpsCommands(bot,
services)``, ``OutboxDelivery(bot, services)``: the discord client for Discord, the services
for everything else). Code that only has an interaction (a persistent button, an app command
check) reaches them with :func:`services_of`.

Everything is built on first use: the bot process never loads torch, and the HTTP session is
made inside the running event loop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import cached_property

import aiohttp
import discord
from celery import Celery
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.progress import JobProgressWatcher
from db.blobs import purge_unreferenced
from db.engine import make_async_engine, make_async_session_factory
from db.resources import Resources
from jobqueue.app import make_celery

log = logging.getLogger(__name__)
# The discord.py bot classes (HpsBot is an AutoShardedBot; tests may run a plain Bot).
DiscordBot = commands.Bot | commands.AutoShardedBot


@dataclass
class BotServices(Resources):
    """Settings, databases, image store, job queue and HTTP client of one bot process.

    From :class:`db.resources.Resources`: ``settings``, the synchronous ``engine`` and
    ``factory`` (job submission uses them: ``jobqueue.submit`` is synchronous) and ``store``.
    Added here: the async engine and session factory (everything else the bot does in the
    database), the Celery client, the HTTP session and the job progress watcher."""

    @cached_property
    def async_engine(self) -> AsyncEngine:
        """The asynchronous database engine (psycopg 3 async / aiosqlite)."""
        return make_async_engine(self.settings.database_url)

    @cached_property
    def async_factory(self) -> async_sessionmaker[AsyncSession]:
        """Async sessions bound to :attr:`async_engine`; run domain operations through
        ``db.engine.run_transaction_async``."""
        return make_async_session_factory(self.async_engine)

    @cached_property
    def celery(self) -> Celery:
        """A Celery client: the bot sends tasks by name and never imports the workers."""
        return make_celery(self.settings)

    @cached_property
    def http(self) -> aiohttp.ClientSession:
        """The HTTP session for downloads (attachments, CDN); first use must be in the loop."""
        return aiohttp.ClientSession()

    @cached_property
    def job_progress(self) -> JobProgressWatcher:
        """Shows the progress of the jobs slash commands started in their responses."""
        return JobProgressWatcher(self.async_factory)

    async def purge_blobs(self, shas: list[str]) -> int:
        """Delete the blobs no image row references any more; return the count."""
        return await purge_unreferenced(self.async_factory, self.store, shas)

    async def aclose(self, timeout_s: float) -> None:
        """Stop following jobs, close the HTTP session and release every database
        connection (each step at most ``timeout_s``)."""
        if "job_progress" in self.__dict__:
            self.job_progress.stop()
        if "http" in self.__dict__:
            await self.http.close()
        if "async_engine" in self.__dict__:
            try:
                await asyncio.wait_for(self.async_engine.dispose(), timeout_s)
            except TimeoutError:
                log.warning("database connections not closed within %.0f s", timeout_s)
        self.dispose()


def services_of(client: discord.Client) -> BotServices:
    """The services of the bot ``client`` is (for code that only has an interaction)."""
    services = getattr(client, "services", None)
    if not isinstance(services, BotServices):
        raise TypeError(f"{type(client).__name__} carries no BotServices")
    return services
