"""Slash commands. Each one acknowledges within Discord's 3 seconds (defer), then does the slow
part; errors reach the user as one short private line.

Visibility follows Discord's rule: after a deferral, the first follow-up takes the deferral's
visibility (it becomes the deferred response). So every command defers privately, and its
first follow-up is private too: a refusal, or the note that its job is queued (which the
progress edits then update). A job's result is a later follow-up, public by its own flags."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import timedelta
from functools import partial
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks
from bot.arena import new_duel
from bot.downloads import DownloadRefused, download_attachment
from bot.harvesting.adapters import ADAPTER_CHOICES, adapter_named
from bot.harvesting.cog import harvest_cog
from bot.progress import InteractionProgress
from bot.replies import acknowledge, say_privately
from bot.services import BotServices, DiscordBot, services_of
from db.arena import generator_name
from db.arena_gate import (
    GateSettings,
    InvalidArenaSettings,
    PromotionGated,
    check_promotion_allowed,
    set_arena_settings,
)
from db.channels import disable_channel, enable_channel, harvest_adapter, last_seen_message
from db.engine import run_transaction_async
from db.errors import DomainError, JobLimitReached
from db.jobs import UserJobLimits, check_user_job_limits
from db.models import Sharing
from db.privacy import forget_user, opt_in, opt_out
from db.registry import ModelNotFound, list_model_versions, promote_model_version
from db.scope import Scope, find_generation, set_sharing
from db.stats import row_counts
from discord_text import fit_content, quote_user_text
from exchange.card import DEFAULT_LICENSE
from jobqueue.contracts import (
    DEFAULT_ADAPT_PROMPTS,
    DEFAULT_IMAGES,
    DEFAULT_LEADERBOARD_ROUNDS,
    MAX_LEADERBOARD_ROUNDS,
    AdaptParams,
    AdaptSource,
    DuelParams,
    ExportParams,
    GenerateParams,
    JobParams,
    JobScope,
    LeaderboardParams,
    RankParams,
    RegenerateParams,
    ScoreParams,
    StatsParams,
    TrainParams,
)
from jobqueue.submit import EnqueueError, JobOrigin, enqueue_job, record_job
from media.intake import ImageRejected, intake_and_store
from media.model_inputs import parse_model_inputs

log = logging.getLogger(__name__)
INTERACTION_TOKEN_LIFETIME = timedelta(minutes=15)
MESSAGE_LINK = re.compile(r"/channels/\d+/\d+/(\d+)")
# Discord's own limit on a string option is 6,000 characters; a prompt is far shorter (CLIP
# reads 77 tokens), and a short cap keeps every echo of it within a message.
MAX_PROMPT_CHARS = 500
QUEUED_NOTE_TIMEOUT_S = 10.0
MAX_LINK_CHARS = 200
MAX_LICENCE_CHARS = 100
# Each job's progress is shown by editing the command's (private) response, with this label.
JOB_LABELS = {
    "score": "Scoring",
    "rank": "Ranking",
    "generate": "Generating",
    "regenerate": "Regenerating",
    "duel": "Preparing the duel",
    "train": "Training",
    "adapt": "Adapting",
    "export": "Exporting",
    "stats": "Counting",
    "leaderboard": "Rating the models",
    "score_unscored": "Scoring",
}
Prompt = app_commands.Range[str, 1, MAX_PROMPT_CHARS]
MessageLink = app_commands.Range[str, 1, MAX_LINK_CHARS]
Licence = app_commands.Range[str, 1, MAX_LICENCE_CHARS]
Epochs = app_commands.Range[int, 1, 100]
LearningRate = app_commands.Range[float, 1e-8, 1e-1]
EPOCHS_HELP = "passes over the choices (default 1, the paper's)"
ADAPT_SOURCE_HELP = (
    "where the examples come from (auto: the server's harvested image sets when there are enough)"
)
LR_HELP = "learning rate (default 1.7e-5, the paper's)"
MAX_LISTED_MODELS = 25
ADAPT_LORA_STEPS = 1000  # the command's default (hps.diffusion.lora_training.LoraConfig's)
ADAPT_IMAGES_PER_PROMPT = 8  # the command's default (hps.diffusion.adapt.AdaptConfig's)


def train_params(
    force: bool, epochs: int, lr: float | None, scope: JobScope = JobScope.guild
) -> TrainParams:
    """A train job's parameters from the command's options (the paper's lr unless given);
    operators' jobs run in the pooled scope (db.scope: global models, the pooled guilds'
    data)."""
    chosen: dict[str, Any] = {"force": force, "epochs": epochs}
    if lr is not None:
        chosen["lr"] = lr
    if scope is JobScope.pooled:
        chosen["scope"] = scope
    return TrainParams(**chosen)


def origin_of(interaction: discord.Interaction) -> JobOrigin:
    """Who asked, in which guild and channel, and the interaction that may answer."""
    return JobOrigin(
        requested_by=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        interaction_token=interaction.token,
        interaction_expires_at=interaction.created_at + INTERACTION_TOKEN_LIFETIME,
    )


class HpsCommands(commands.Cog):
    hps = app_commands.Group(name="hps", description="Human Preference Score")
    privacy = app_commands.Group(
        name="privacy", description="Your data in this community's dataset", parent=hps
    )
    admin = app_commands.Group(
        name="admin", description="Administer HPS in this server", parent=hps
    )
    operator = app_commands.Group(
        name="operator",
        description="For the bot's operators: global models and pooled data",
        parent=hps,
    )

    def __init__(self, bot: DiscordBot, services: BotServices | None = None) -> None:
        self.bot = bot
        self.services = services or services_of(bot)

    async def _fetch_image(self, attachment: discord.Attachment) -> str:
        settings = self.services.settings
        raw = await download_attachment(
            self.services.http, settings, attachment.url, attachment.size
        )
        result = await asyncio.get_running_loop().run_in_executor(
            None,
            partial(
                intake_and_store,
                raw,
                self.services.store,
                max_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
                model_inputs=parse_model_inputs(settings.model_inputs),
            ),
        )
        return result.sha256

    async def _submit(
        self,
        interaction: discord.Interaction,
        params: JobParams,
        *,
        limited: bool = True,
        queued: str | None = None,
    ) -> uuid.UUID:
        """Queue a job for this interaction and follow its progress in the command's private
        response (first: ``queued``, or "<label>: queued"). The user's rate and open-job
        limits are checked atomically with the job's insert unless ``limited`` is False
        (admins' jobs); JobLimitReached when reached."""
        loop = asyncio.get_running_loop()
        record = partial(
            record_job,
            self.services.factory,
            params,
            origin_of(interaction),
            limits=self._user_limits() if limited else None,
        )
        job_id: uuid.UUID = await loop.run_in_executor(None, record)
        label = JOB_LABELS.get(params.kind, params.kind.capitalize())
        # Said before the task is sent, so that no result can be the first follow-up (which
        # would take the private deferral's visibility).
        try:
            async with asyncio.timeout(QUEUED_NOTE_TIMEOUT_S):  # the job waits for this
                await say_privately(interaction, queued or f"{label}: queued")
        except (discord.HTTPException, TimeoutError) as exc:  # a courtesy: the job still runs
            log.info("queued note for job %s not posted: %r", job_id, exc)
        services = self.services
        enqueue = partial(enqueue_job, services.celery, services.factory, params.kind, job_id)
        await loop.run_in_executor(None, enqueue)
        services.job_progress.follow(job_id, label, interaction)
        return job_id

    async def _queue_admin_job(
        self, interaction: discord.Interaction, params: JobParams, queued: str
    ) -> None:
        """Queue an admin's job (no user limits) and say so in the command's response."""
        await self._submit_or_apologise(interaction, params, limited=False, queued=queued)

    def _user_limits(self) -> UserJobLimits:
        settings = self.services.settings
        return UserJobLimits(settings.user_jobs_per_minute, settings.user_max_open_jobs)

    async def _check_user_limits(self, user_id: int, guild_id: int | None) -> None:
        """A cheap early refusal (before a download); the job's insert checks again."""
        await run_transaction_async(
            self.services.async_factory,
            partial(
                check_user_job_limits,
                user_id=user_id,
                limits=self._user_limits(),
                guild_id=guild_id,
            ),
        )

    @hps.command(name="score", description="Score an image against the prompt it was made for")
    @app_commands.describe(image="the image", prompt="the prompt it was generated from")
    async def score(
        self, interaction: discord.Interaction, image: discord.Attachment, prompt: Prompt
    ) -> None:
        await acknowledge(interaction)
        try:
            # Before the download.
            await self._check_user_limits(interaction.user.id, interaction.guild_id)
            sha = await self._fetch_image(image)
            await self._submit(interaction, ScoreParams(prompt=prompt, images=[sha]))
        except (DownloadRefused, ImageRejected, EnqueueError, JobLimitReached) as exc:
            await say_privately(interaction, f"Sorry, I can't score that: {exc}")

    @hps.command(name="generate", description="Generate images; pick the one you like best")
    @app_commands.describe(prompt="what to draw", n="how many images (1-10)")
    async def generate(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        n: app_commands.Range[int, 1, 10] = DEFAULT_IMAGES,
    ) -> None:
        await acknowledge(interaction)
        await self._submit_or_apologise(interaction, GenerateParams(prompt=prompt, n=n))

    @hps.command(name="arena", description="A blind duel of this server's models; vote A or B")
    @app_commands.describe(prompt="what both models draw", votes="close after this many votes")
    async def arena(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        votes: app_commands.Range[int, 1, 100] = 10,
    ) -> None:
        await acknowledge(interaction)
        if interaction.guild_id is None or interaction.channel_id is None:
            await say_privately(interaction, "Duels happen in a server's channel.")
            return
        try:
            await self._check_user_limits(interaction.user.id, interaction.guild_id)
            duel_id = await run_transaction_async(
                self.services.async_factory,
                partial(
                    new_duel,
                    guild_id=interaction.guild_id,
                    channel_id=interaction.channel_id,
                    prompt=prompt,
                    requested_by=interaction.user.id,
                    max_votes=votes,
                    generator=generator_name(self.services.settings.sd_pipeline),
                ),
            )
        except (JobLimitReached, DomainError) as exc:
            await say_privately(interaction, f"Sorry: {exc}")
            return
        if duel_id is None:
            await say_privately(
                interaction, "This server has no LoRA yet, so there is nothing to compare."
            )
            return
        await self._submit_or_apologise(interaction, DuelParams(duel_id=duel_id))

    @hps.command(name="leaderboard", description="Arena ratings of this server's models")
    @app_commands.describe(
        rounds="bootstrap rounds for the 95% intervals (0: none)",
        include_open="count the votes of duels still open too",
    )
    async def leaderboard(
        self,
        interaction: discord.Interaction,
        rounds: app_commands.Range[int, 0, MAX_LEADERBOARD_ROUNDS] = DEFAULT_LEADERBOARD_ROUNDS,
        include_open: bool = False,
    ) -> None:
        await acknowledge(interaction)
        if interaction.guild_id is None:
            await say_privately(interaction, "Leaderboards belong to a server's arena.")
            return
        params = LeaderboardParams(rounds=rounds, include_open=include_open)
        await self._submit_or_apologise(interaction, params)

    async def _generation_from(self, interaction: discord.Interaction, target: str) -> int | None:
        """A generation id of this server, from a message link or a message id; None for
        anything else, another server's included (it reads as "no generation")."""
        match = MESSAGE_LINK.search(target)
        message_id = int(match.group(1)) if match else int(target) if target.isdigit() else None
        if message_id is None or interaction.guild_id is None:
            return None
        return await run_transaction_async(
            self.services.async_factory,
            partial(
                find_generation, scope=Scope.guild(interaction.guild_id), message_id=message_id
            ),
        )

    async def _submit_or_apologise(
        self,
        interaction: discord.Interaction,
        params: JobParams,
        *,
        limited: bool = True,
        queued: str | None = None,
    ) -> bool:
        """Queue the job; tell the user (privately) when the queue is unavailable or they
        reached their limits."""
        try:
            await self._submit(interaction, params, limited=limited, queued=queued)
        except (EnqueueError, JobLimitReached) as exc:
            await say_privately(interaction, f"Sorry: {exc}")
            return False
        return True

    async def _submit_for_generation(
        self,
        interaction: discord.Interaction,
        message: str,
        params: type[RankParams] | type[RegenerateParams],
        **options: Any,
    ) -> None:
        generation_id = await self._generation_from(interaction, message.strip())
        if generation_id is None:
            await say_privately(
                interaction,
                "I have no generation for that message in this server (is the channel harvested?)",
            )
            return
        await self._submit_or_apologise(interaction, params(generation_id=generation_id, **options))

    @hps.command(name="rank", description="Rank the images of a generation by HPS")
    @app_commands.describe(message="a link to the message with the images (or its id)")
    async def rank(self, interaction: discord.Interaction, message: MessageLink) -> None:
        await acknowledge(interaction)
        await self._submit_for_generation(interaction, message, RankParams)

    @hps.command(name="regenerate", description="Redo a generation with the community's taste")
    @app_commands.describe(
        message="a link to the message with the images (or its id)", n="best of n"
    )
    async def regenerate(
        self,
        interaction: discord.Interaction,
        message: MessageLink,
        n: app_commands.Range[int, 1, 16] = DEFAULT_IMAGES,
    ) -> None:
        await acknowledge(interaction)
        await self._submit_for_generation(interaction, message, RegenerateParams, n=n)

    @privacy.command(name="optout", description="Stop storing anything of mine")
    async def optout(self, interaction: discord.Interaction) -> None:
        await acknowledge(interaction)
        await run_transaction_async(
            self.services.async_factory, partial(opt_out, user_id=interaction.user.id)
        )
        await say_privately(
            interaction,
            "Opted out: nothing of yours is stored from now on. "
            "`/hps privacy forget-me` also deletes what was stored before.",
        )

    @privacy.command(name="optin", description="Allow storing my generations and picks")
    async def optin(self, interaction: discord.Interaction) -> None:
        await acknowledge(interaction)
        await run_transaction_async(
            self.services.async_factory, partial(opt_in, user_id=interaction.user.id)
        )
        await say_privately(interaction, "Opted in: thank you.")

    @privacy.command(name="forget-me", description="Delete everything stored about me")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        await acknowledge(interaction)
        user_id = interaction.user.id
        orphans = await run_transaction_async(
            self.services.async_factory, partial(forget_user, user_id=user_id, keep_opt_out=True)
        )
        removed = await self.services.purge_blobs(orphans)
        await say_privately(
            interaction,
            f"Done: your generations, picks and jobs are deleted ({removed} images removed), "
            "and you stay opted out. `/hps privacy optin` to take part again.",
        )

    # -- admin (checked server-side by each command's check) -------------------------
    @admin.command(name="channels", description="Harvest (or stop harvesting) a channel")
    @app_commands.choices(adapter=ADAPTER_CHOICES)
    @checks.admin()
    async def channels(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel,
        adapter: str | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        if channel.guild.id != interaction.guild_id:
            await say_privately(interaction, "That channel is not in this server.")
            return
        if adapter is not None and adapter_named(adapter) is None:  # Discord checks choices;
            await say_privately(interaction, "There is no such adapter.")  # a forged call may not
            return
        if adapter is None:
            was = await run_transaction_async(
                self.services.async_factory,
                partial(disable_channel, channel_id=channel.id, guild_id=interaction.guild_id),
            )
            text = (
                f"Stopped harvesting {channel.mention}."
                if was
                else f"{channel.mention} was not harvested."
            )
        else:
            await run_transaction_async(
                self.services.async_factory,
                partial(
                    enable_channel,
                    guild_id=interaction.guild_id,
                    channel_id=channel.id,
                    adapter=adapter,
                    enabled_by=interaction.user.id,
                ),
            )
            text = f"Harvesting {channel.mention} with the {adapter} adapter."
        harvest = harvest_cog(self.bot)
        if harvest is not None:
            harvest.forget_channel_config()
        await say_privately(interaction, text)

    @admin.command(
        name="train", description="Train a candidate HPS model on this server's choices so far"
    )
    @app_commands.describe(
        force="promote even if it does not beat the active model", epochs=EPOCHS_HELP, lr=LR_HELP
    )
    @checks.admin()
    async def train(
        self,
        interaction: discord.Interaction,
        force: bool = False,
        epochs: Epochs = 1,
        lr: LearningRate | None = None,
    ) -> None:
        params = train_params(force, epochs, lr)
        await self._queue_admin_job(
            interaction, params, "Training queued; the report will be posted here."
        )

    @admin.command(name="promote", description="Make one of this server's model versions active")
    @checks.admin()
    async def promote(self, interaction: discord.Interaction, version_id: int) -> None:
        assert interaction.guild_id is not None
        await self._promote(interaction, version_id, Scope.guild(interaction.guild_id))

    async def _promote(
        self, interaction: discord.Interaction, version_id: int, scope: Scope
    ) -> None:
        guild_id = interaction.guild_id

        def promote(session: Any) -> str:
            if not scope.is_pooled and guild_id is not None:
                # A gated server's LoRA candidate is promoted only once it won its duels.
                check_promotion_allowed(session, guild_id, version_id)
            return promote_model_version(session, version_id, scope).name

        try:
            name = await run_transaction_async(self.services.async_factory, promote)
        except ModelNotFound as exc:
            await say_privately(interaction, str(exc))
            return
        except PromotionGated as exc:
            await say_privately(interaction, fit_content(f"Not promoted: {exc}"))
            return
        where = "for every server without its own" if scope.is_pooled else "in this server"
        await say_privately(
            interaction, f"Model {quote_user_text(name, 128)} ({version_id}) is now active {where}."
        )

    @admin.command(name="arena", description="The arena's human gate for LoRA promotion")
    @app_commands.describe(
        gate="whether a LoRA candidate must win its duels before it is promoted",
        min_votes="votes the gate needs (default 30)",
        threshold="the win rate's 95% interval must end above this (default 0.5)",
        duels="duels scheduled per candidate (default 6)",
        votes="votes that close a scheduled duel (default 10)",
        hours="hours a scheduled duel stays open (default 24)",
        channel="where scheduled duels are posted (default: where the adapt job reported)",
        clear_channel="forget the arena channel",
    )
    @checks.admin()
    async def arena_settings(
        self,
        interaction: discord.Interaction,
        gate: bool | None = None,
        min_votes: app_commands.Range[int, 1, 10_000] | None = None,
        threshold: app_commands.Range[float, 0.0, 0.99] | None = None,
        duels: app_commands.Range[int, 1, 50] | None = None,
        votes: app_commands.Range[int, 1, 1000] | None = None,
        hours: app_commands.Range[float, 0.02, 168.0] | None = None,
        channel: discord.TextChannel | None = None,
        clear_channel: bool = False,
    ) -> None:
        assert interaction.guild_id is not None
        if channel is not None and channel.guild.id != interaction.guild_id:
            await say_privately(interaction, "That channel is not in this server.")
            return
        change = partial(
            set_arena_settings,
            guild_id=interaction.guild_id,
            clear_channel=clear_channel,
            gate_enabled=gate,
            min_votes=min_votes,
            threshold=threshold,
            duels_per_candidate=duels,
            votes_per_duel=votes,
            duel_open_seconds=None if hours is None else round(hours * 3600),
            arena_channel_id=None if channel is None else channel.id,
        )
        try:
            settings: GateSettings = await run_transaction_async(
                self.services.async_factory, change
            )
        except InvalidArenaSettings as exc:
            await say_privately(interaction, f"Not changed: {exc}")
            return
        # The arena channel's listener (bot.arena_channel) drops its cached channel.
        self.bot.dispatch("arena_settings_changed", interaction.guild_id)
        await say_privately(interaction, settings.describe())

    @admin.command(name="models", description="This server's model versions")
    @checks.admin()
    async def models(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        await say_privately(
            interaction, await self._describe_models(Scope.guild(interaction.guild_id))
        )

    async def _describe_models(self, scope: Scope) -> str:
        def lines(session: Any) -> list[str]:
            return [
                f"{v.id}: {v.kind.value} {quote_user_text(v.name, 128)} ({v.status.value})"
                for v in list_model_versions(session, scope=scope)[:MAX_LISTED_MODELS]
            ]

        found = await run_transaction_async(self.services.async_factory, lines)
        heading = "Global model versions" if scope.is_pooled else "This server's model versions"
        if not found:
            return f"{heading}: none yet (the server uses the global ones)."
        return fit_content(f"{heading}, newest first:\n" + "\n".join(found))

    @admin.command(name="sharing", description="Whether this server's data may be used beyond it")
    @app_commands.describe(
        mode="private: only this server's models and exports; pooled: also global training "
        "and exports across servers"
    )
    @checks.admin()
    async def sharing(
        self, interaction: discord.Interaction, mode: Literal["private", "pooled"]
    ) -> None:
        assert interaction.guild_id is not None
        await run_transaction_async(
            self.services.async_factory,
            partial(set_sharing, guild_id=interaction.guild_id, sharing=Sharing(mode)),
        )
        text = (
            "This server's data is now pooled: the operators may use it for global models and "
            "exports across servers (members' opt-outs still apply)."
            if mode == "pooled"
            else "This server's data is now private: only this server's models and exports use it."
        )
        await say_privately(interaction, text)

    @admin.command(name="stats", description="Charts of what this server collected")
    @checks.admin()
    async def stats(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        counts = await run_transaction_async(
            self.services.async_factory,
            partial(row_counts, scope=Scope.guild(interaction.guild_id)),
        )
        summary = ", ".join(f"{value} {name}" for name, value in counts.items())
        queued = f"The dataset holds {summary}. Charts are on their way."
        await self._queue_admin_job(interaction, StatsParams(), queued)

    @admin.command(name="backfill", description="Harvest a channel's history (idempotent)")
    @app_commands.describe(
        channel="a harvested channel",
        from_start="read the whole history, not only what came after the last seen message",
        limit="read at most this many messages",
    )
    @checks.admin()
    async def backfill(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel,
        from_start: bool = False,
        limit: app_commands.Range[int, 1, 1_000_000] | None = None,
    ) -> None:
        adapter = await run_transaction_async(
            self.services.async_factory,
            partial(harvest_adapter, channel_id=channel.id, guild_id=interaction.guild_id),
        )
        if adapter is None:
            await interaction.edit_original_response(
                content=f"{channel.mention} is not harvested: `/hps admin channels` first."
            )
            return
        after = None
        if not from_start:
            after = await run_transaction_async(
                self.services.async_factory, partial(last_seen_message, channel_id=channel.id)
            )
        progress = InteractionProgress(interaction)
        harvest = harvest_cog(self.bot)
        assert harvest is not None, "the harvest cog is loaded with this one"
        report = await harvest.backfiller.channel(
            channel,
            after=after,
            limit=limit,
            progress=lambda report: progress.update(report.describe()),
        )
        await progress.finish(report.describe())

    @admin.command(name="adapt", description="Adapt Stable Diffusion to the community's taste")
    @app_commands.describe(
        prompts="how many harvested prompts to adapt on",
        lora_steps="LoRA training steps",
        images_per_prompt="images generated per prompt for the selection",
        source=ADAPT_SOURCE_HELP,
        lr="LoRA learning rate (default: the recipe's)",
        inference_steps="denoising steps of every generation (default: the recipe's)",
        eval_images="images per held-out prompt in each arm of the evaluation",
    )
    @checks.admin()
    async def adapt(
        self,
        interaction: discord.Interaction,
        prompts: app_commands.Range[int, 4, 100_000] = DEFAULT_ADAPT_PROMPTS,
        lora_steps: app_commands.Range[int, 1, 1_000_000] = ADAPT_LORA_STEPS,
        images_per_prompt: app_commands.Range[int, 4, 64] = ADAPT_IMAGES_PER_PROMPT,
        source: AdaptSource = "auto",
        lr: LearningRate | None = None,
        inference_steps: app_commands.Range[int, 1, 200] | None = None,
        eval_images: app_commands.Range[int, 1, 64] | None = None,
    ) -> None:
        params = AdaptParams(
            limit_prompts=prompts,
            lora_steps=lora_steps,
            images_per_prompt=images_per_prompt,
            source=source,
            lr=lr,
            inference_steps=inference_steps,
            eval_images_per_prompt=eval_images,
        )
        await self._queue_admin_job(
            interaction, params, "Adaptation queued; the evaluation will be posted here."
        )

    @admin.command(name="export", description="Export the dataset (Pick-a-Pic parquet, HPD)")
    @app_commands.describe(licence="licence written into the dataset card")
    @checks.admin()
    async def export(
        self,
        interaction: discord.Interaction,
        licence: Licence = DEFAULT_LICENSE,
    ) -> None:
        params = ExportParams(licence=licence)  # the job's guild decides what is exported
        await self._queue_admin_job(
            interaction, params, "Export queued; the dataset card will be posted here."
        )

    # -- operators (checked server-side by each command's check) ---------------------
    @operator.command(
        name="train", description="Train a global HPS candidate on the pooled servers' choices"
    )
    @app_commands.describe(
        force="promote even if it does not beat the global model", epochs=EPOCHS_HELP, lr=LR_HELP
    )
    @checks.operator()
    async def operator_train(
        self,
        interaction: discord.Interaction,
        force: bool = False,
        epochs: Epochs = 1,
        lr: LearningRate | None = None,
    ) -> None:
        params = train_params(force, epochs, lr, JobScope.pooled)
        await self._queue_admin_job(
            interaction, params, "Global training queued; the report will be posted here."
        )

    @operator.command(
        name="adapt", description="Adapt Stable Diffusion to the pooled servers' taste (global)"
    )
    @app_commands.describe(source=ADAPT_SOURCE_HELP)
    @checks.operator()
    async def operator_adapt(
        self,
        interaction: discord.Interaction,
        prompts: app_commands.Range[int, 4, 100_000] = DEFAULT_ADAPT_PROMPTS,
        lora_steps: app_commands.Range[int, 1, 1_000_000] = ADAPT_LORA_STEPS,
        source: AdaptSource = "auto",
    ) -> None:
        params = AdaptParams(
            scope=JobScope.pooled, limit_prompts=prompts, lora_steps=lora_steps, source=source
        )
        await self._queue_admin_job(
            interaction,
            params,
            "Global adaptation queued; the report will be posted here.",
        )

    @operator.command(name="promote", description="Make a global model version the active one")
    @checks.operator()
    async def operator_promote(self, interaction: discord.Interaction, version_id: int) -> None:
        await self._promote(interaction, version_id, Scope.pooled())

    @operator.command(name="models", description="The global model versions")
    @checks.operator()
    async def operator_models(self, interaction: discord.Interaction) -> None:
        await say_privately(interaction, await self._describe_models(Scope.pooled()))

    @operator.command(
        name="export", description="Export the pooled servers' data (the card lists them)"
    )
    @checks.operator()
    async def operator_export(
        self, interaction: discord.Interaction, licence: Licence = DEFAULT_LICENSE
    ) -> None:
        await self._queue_admin_job(
            interaction,
            ExportParams(scope=JobScope.pooled, licence=licence),
            "Export of the pooled servers queued; the dataset card will be posted here.",
        )
