"""Slash commands. Each one acknowledges within Discord's 3 seconds (defer), then does the slow
part; errors reach the user as one short ephemeral line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.admin import ADAPTERS, dataset_counts, is_admin
from bot.downloads import DownloadRefused, download
from db.channels import disable_channel, enable_channel, generation_for_message
from db.engine import run_transaction_async
from db.privacy import forget_user, opt_in, opt_out
from db.registry import promote_model_version
from jobqueue.submit import EnqueueError, submit_job
from media.intake import ImageRejected, intake_and_store

log = logging.getLogger(__name__)
INTERACTION_TOKEN_LIFETIME = timedelta(minutes=15)
MESSAGE_LINK = re.compile(r"/channels/\d+/\d+/(\d+)")


class HpsCommands(commands.Cog):
    hps = app_commands.Group(name="hps", description="Human Preference Score")
    privacy = app_commands.Group(
        name="privacy", description="Your data in this community's dataset", parent=hps
    )
    admin = app_commands.Group(name="admin", description="Administer the HPS platform", parent=hps)

    def __init__(self, bot: Any) -> None:
        self.bot = bot

    async def _fetch_image(self, attachment: discord.Attachment) -> str:
        settings = self.bot.settings
        raw = await download(
            self.bot.http_session,
            attachment.url,
            allowed_hosts=settings.allowed_cdn_hosts,
            max_bytes=settings.max_image_bytes,
            timeout_s=settings.download_timeout_s,
            allow_insecure=settings.allow_insecure_cdn,
            declared_size=attachment.size,
        )
        result = await asyncio.get_running_loop().run_in_executor(
            None,
            partial(
                intake_and_store,
                raw,
                self.bot.store,
                max_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
            ),
        )
        return result.sha256

    async def _submit(
        self, interaction: discord.Interaction, kind: str, params: dict[str, Any]
    ) -> None:
        job = partial(
            submit_job,
            self.bot.celery,
            self.bot.sync_factory,
            kind,
            params,
            requested_by=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            interaction_token=interaction.token,
            interaction_expires_at=datetime.now(UTC) + INTERACTION_TOKEN_LIFETIME,
        )
        await asyncio.get_running_loop().run_in_executor(None, job)

    @hps.command(name="score", description="Score an image against the prompt it was made for")
    @app_commands.describe(image="the image", prompt="the prompt it was generated from")
    async def score(
        self, interaction: discord.Interaction, image: discord.Attachment, prompt: str
    ) -> None:
        await interaction.response.defer(thinking=True)
        try:
            sha = await self._fetch_image(image)
            await self._submit(interaction, "score", {"prompt": prompt, "images": [sha]})
        except (DownloadRefused, ImageRejected, EnqueueError) as exc:
            await interaction.followup.send(f"Sorry, I can't score that: {exc}", ephemeral=True)

    @hps.command(name="generate", description="Generate images; pick the one you like best")
    @app_commands.describe(prompt="what to draw", n="how many images (1-10)")
    async def generate(
        self, interaction: discord.Interaction, prompt: str, n: app_commands.Range[int, 1, 10] = 4
    ) -> None:
        await interaction.response.defer(thinking=True)
        await self._submit_or_apologise(interaction, "generate", {"prompt": prompt, "n": n})

    async def _generation_from(self, interaction: discord.Interaction, target: str) -> int | None:
        """A generation id from a message link, a message id or a generation id."""
        match = MESSAGE_LINK.search(target)
        message_id = int(match.group(1)) if match else int(target) if target.isdigit() else None
        if message_id is None:
            return None
        return await run_transaction_async(
            self.bot.factory, partial(generation_for_message, message_id=message_id)
        )

    async def _submit_or_apologise(
        self, interaction: discord.Interaction, kind: str, params: dict[str, Any]
    ) -> bool:
        """Queue the job; tell the user (privately) when the queue is unavailable."""
        try:
            await self._submit(interaction, kind, params)
        except EnqueueError as exc:
            await interaction.followup.send(f"Sorry: {exc}", ephemeral=True)
            return False
        return True

    async def _submit_for_generation(
        self, interaction: discord.Interaction, message: str, kind: str, params: dict[str, Any]
    ) -> None:
        generation_id = await self._generation_from(interaction, message.strip())
        if generation_id is None:
            await interaction.followup.send(
                "I have no generation for that message (is the channel harvested?)", ephemeral=True
            )
            return
        await self._submit_or_apologise(
            interaction, kind, {"generation_id": generation_id, **params}
        )

    @hps.command(name="rank", description="Rank the images of a generation by HPS")
    @app_commands.describe(message="a link to the message with the images (or its id)")
    async def rank(self, interaction: discord.Interaction, message: str) -> None:
        await interaction.response.defer(thinking=True)
        await self._submit_for_generation(interaction, message, "rank", {})

    @hps.command(name="regenerate", description="Redo a generation with the community's taste")
    @app_commands.describe(
        message="a link to the message with the images (or its id)", n="best of n"
    )
    async def regenerate(
        self, interaction: discord.Interaction, message: str, n: app_commands.Range[int, 1, 16] = 4
    ) -> None:
        await interaction.response.defer(thinking=True)
        await self._submit_for_generation(interaction, message, "regenerate", {"n": n})

    @privacy.command(name="optout", description="Stop storing anything of mine")
    async def optout(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await run_transaction_async(self.bot.factory, partial(opt_out, user_id=interaction.user.id))
        await interaction.followup.send(
            "Opted out: nothing of yours is stored from now on. "
            "`/hps privacy forget-me` also deletes what was stored before.",
            ephemeral=True,
        )

    @privacy.command(name="optin", description="Allow storing my generations and picks")
    async def optin(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await run_transaction_async(self.bot.factory, partial(opt_in, user_id=interaction.user.id))
        await interaction.followup.send("Opted in: thank you.", ephemeral=True)

    @privacy.command(name="forget-me", description="Delete everything stored about me")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        user_id = interaction.user.id
        orphans = await run_transaction_async(
            self.bot.factory, partial(forget_user, user_id=user_id, keep_opt_out=True)
        )
        removed = await self.bot.purge_blobs(orphans)
        await interaction.followup.send(
            f"Done: your generations, picks and jobs are deleted ({removed} images removed), "
            "and you stay opted out. `/hps privacy optin` to take part again.",
            ephemeral=True,
        )

    # -- admin (checked server-side in each command) ---------------------------------
    async def _refuse_non_admins(self, interaction: discord.Interaction) -> bool:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if await is_admin(self.bot, interaction):
            return False
        await interaction.followup.send("Only server admins can use this command.", ephemeral=True)
        return True

    @admin.command(name="channels", description="Harvest (or stop harvesting) a channel")
    async def channels(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel,
        adapter: ADAPTERS | None = None,
    ) -> None:
        if await self._refuse_non_admins(interaction):
            return
        assert interaction.guild_id is not None
        if adapter is None:
            was = await run_transaction_async(
                self.bot.factory, partial(disable_channel, channel_id=channel.id)
            )
            text = (
                f"Stopped harvesting {channel.mention}."
                if was
                else f"{channel.mention} was not harvested."
            )
        else:
            await run_transaction_async(
                self.bot.factory,
                partial(
                    enable_channel,
                    guild_id=interaction.guild_id,
                    channel_id=channel.id,
                    adapter=adapter,
                    enabled_by=interaction.user.id,
                ),
            )
            text = f"Harvesting {channel.mention} with the {adapter} adapter."
        harvest = self.bot.get_cog("HarvestCog")
        if harvest is not None:
            harvest.forget_channel_config()
        await interaction.followup.send(text, ephemeral=True)

    @admin.command(name="train", description="Train a candidate HPS model on the choices so far")
    async def train(self, interaction: discord.Interaction, force: bool = False) -> None:
        if await self._refuse_non_admins(interaction):
            return
        if not await self._submit_or_apologise(interaction, "train", {"force": force}):
            return
        await interaction.followup.send(
            "Training queued; the report will be posted here.", ephemeral=True
        )

    @admin.command(name="promote", description="Make a model version the active one")
    async def promote(self, interaction: discord.Interaction, version_id: int) -> None:
        if await self._refuse_non_admins(interaction):
            return
        try:
            name = await run_transaction_async(
                self.bot.factory,
                lambda session: promote_model_version(session, version_id).name,
            )
        except ValueError as exc:
            await interaction.followup.send(str(exc), ephemeral=True)
            return
        await interaction.followup.send(
            f"Model {name} ({version_id}) is now active.", ephemeral=True
        )

    @admin.command(name="stats", description="What the dataset holds")
    async def stats(self, interaction: discord.Interaction) -> None:
        if await self._refuse_non_admins(interaction):
            return
        counts = await run_transaction_async(self.bot.factory, dataset_counts)
        await interaction.followup.send(
            f"```json\n{json.dumps(counts, indent=1)}\n```", ephemeral=True
        )
