"""The HPS Discord bot: a discord.py client wired to the database, the image store and the
job queue (by task name only; the bot process never loads torch)."""

from __future__ import annotations

import aiohttp
import discord
from discord.ext import commands

from bot.cogs.harvest import HarvestCog
from bot.harvest import Harvester
from config import Settings
from db.engine import make_async_engine, make_async_session_factory
from media.store import open_store


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
        super().__init__(command_prefix=commands.when_mentioned, intents=intents)
        self.settings = settings
        point_at(settings)
        self.engine = make_async_engine(settings.database_url)
        self.factory = make_async_session_factory(self.engine)
        self.store = open_store(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)
        self.http_session: aiohttp.ClientSession | None = None

    async def setup_hook(self) -> None:
        self.http_session = aiohttp.ClientSession()
        harvester = Harvester(self.settings, self.factory, self.store, self.http_session)
        await self.add_cog(HarvestCog(self, harvester))

    async def close(self) -> None:
        await super().close()
        if self.http_session is not None:
            await self.http_session.close()
        await self.engine.dispose()
