"""The arena channel (issue 15, item 1): in the channel a guild's admins named with
``/hps admin arena channel:``, a member's plain message is a prompt, and the bot runs a duel on
it exactly as ``/hps arena prompt:`` would (:func:`bot.arena.new_duel`: the same
configurations, the same per-user job limits and consent rules, the command's default of 10
votes).

What counts as a prompt: a member's (not a bot's, a webhook's or the system's) ordinary
message, not a reply, in the arena channel itself (not a thread under it), with 1 to
:data:`MAX_PROMPT_CHARS` characters of text (attachments alone are not a prompt), not starting
like a command (``/``, ``!``, or the bot's mention). Anything else is ignored without a word:
the channel is also where people talk about the duels.

Exactly one duel per message: the duel's job id is derived from the message id
(:func:`duel_job_id`), and the job row is looked up under the author's job lock in the
transaction that creates the duel, so a gateway replay of MESSAGE_CREATE (or the same event
in two processes) finds it and does nothing. Edits (MESSAGE_UPDATE) are never prompts.

How the bot answers: an accepted prompt gets no reply, the duel's post (A, B and the vote
buttons) is the answer. A refused one (the server has no LoRA to compare, the author hit a job
limit, opted out or has not opted in where the server asks for it) gets one short reply that
pings nobody (``allowed_mentions`` none, the author not pinged either) and says why; such
notes are sent at most once per member and reason every :data:`NOTE_INTERVAL_S` (a busy channel
is not flooded with the same sentence), the other refusals stay silent.

The arena channel of each guild is cached (:class:`ArenaChannels`): at most one query per guild
per :data:`CONFIG_TTL_S`, at once after ``/hps admin arena`` changed it in this process (the
command dispatches ``arena_settings_changed``); other processes see a change within the TTL.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import discord
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from bot import metrics
from bot.arena import new_duel
from bot.services import BotServices, DiscordBot
from db.arena import generator_name
from db.arena_gate import attach_job, get_arena_settings
from db.engine import run_transaction_async
from db.errors import ConsentRequired, DomainError, JobLimitReached, UserOptedOut
from db.jobs import UserJobLimits, create_job, lock_user_jobs
from db.models import Duel, Job
from discord_text import fit_content
from jobqueue.contracts import DuelParams
from jobqueue.submit import EnqueueError, enqueue_job

log = logging.getLogger(__name__)
CONFIG_TTL_S = 30.0
MAX_PROMPT_CHARS = 500  # /hps arena's limit (bot.cogs.commands.MAX_PROMPT_CHARS; a test checks)
DUEL_VOTES = 10  # /hps arena's default ``votes``
NOTE_INTERVAL_S = 600.0
REMEMBERED_MESSAGES = 2048
COMMAND_STARTS = ("/", "!")
# The namespace of duel job ids derived from a message id (any fixed UUID would do).
MESSAGE_JOBS = uuid.UUID("6f1d7c1e-4a52-5b43-9a53-8e0d1c0a7a15")


class ChannelOutcome(enum.StrEnum):
    """What became of a message seen in a guild."""

    ignored = "ignored"  # not in an arena channel, or not a prompt
    duel = "duel"  # a duel was created and its job queued
    duplicate = "duplicate"  # this message had its duel already
    no_lora = "no_lora"
    limit = "limit"
    opted_out = "opted_out"
    consent_required = "consent_required"
    failed = "failed"  # refused for another reason, or a problem on the bot's side


NOTES = {
    ChannelOutcome.no_lora: (
        "No duel: this server has no LoRA yet, so there is nothing to compare."
    ),
    ChannelOutcome.opted_out: (
        "No duel: you opted out, so nothing of yours is stored (`/hps privacy optin` to take part)."
    ),
    ChannelOutcome.consent_required: (
        "No duel: this server uses the prompts of members who opted in: `/hps privacy optin` first."
    ),
    ChannelOutcome.failed: "Sorry, no duel for that one (a problem on my side); try again later.",
}


def duel_job_id(message_id: int) -> uuid.UUID:
    """The id of the duel job a message's prompt gets (the same for every delivery of the
    message: what makes a replayed message find its duel)."""
    return uuid.uuid5(MESSAGE_JOBS, f"arena-channel-message:{message_id}")


@dataclass(frozen=True)
class ChannelPrompt:
    """One prompt posted in an arena channel."""

    guild_id: int
    channel_id: int
    message_id: int
    author_id: int
    prompt: str


def start_channel_duel(
    session: Session, request: ChannelPrompt, *, generator: str, limits: UserJobLimits
) -> tuple[ChannelOutcome, uuid.UUID | None]:
    """Create the duel of an arena-channel prompt and record its ``duel`` job (not sent yet),
    in the caller's transaction: (duel, job id), (duplicate, job id) when the message has its
    duel already, (no_lora, None) when the guild has nothing to compare. Raises the
    DomainErrors of ``/hps arena`` (JobLimitReached, UserOptedOut, ConsentRequired...);
    nothing is written then."""
    job_id = duel_job_id(request.message_id)
    # Every delivery of one message is by its author: their job lock serialises them.
    lock_user_jobs(session, request.author_id)
    if session.get(Job, job_id) is not None:
        return ChannelOutcome.duplicate, job_id
    duel_id = new_duel(
        session,
        guild_id=request.guild_id,
        channel_id=request.channel_id,
        prompt=request.prompt,
        requested_by=request.author_id,
        max_votes=DUEL_VOTES,
        generator=generator,
    )
    if duel_id is None:
        return ChannelOutcome.no_lora, None
    duel = session.get_one(Duel, duel_id)
    duel.params = {**(duel.params or {}), "source_message_id": request.message_id}
    create_job(
        session,
        DuelParams.kind,
        DuelParams(duel_id=duel_id).stored(),
        requested_by=request.author_id,
        guild_id=request.guild_id,
        channel_id=request.channel_id,
        job_id=job_id,
        limits=limits,
    )
    attach_job(session, duel_id, job_id)
    return ChannelOutcome.duel, job_id


class ArenaChannels:
    """Each guild's arena channel (None: none), read from the database at most once per guild
    and ``CONFIG_TTL_S``, and at once after :meth:`forget`."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self.factory = factory
        self._channels: dict[int, tuple[float, int | None]] = {}
        self._queries: dict[int, asyncio.Future[int | None]] = {}
        self._epoch = 0
        self.queries = 0  # how many times the database was asked (tests, metrics)

    async def of(self, guild_id: int) -> int | None:
        """The guild's arena channel id (cached for a short while), None when it has none."""
        cached = self._channels.get(guild_id)
        if cached and time.monotonic() - cached[0] < CONFIG_TTL_S:
            return cached[1]
        # One query per guild at a time: a burst of messages waits for the same answer.
        pending = self._queries.get(guild_id)
        if pending is None:
            pending = asyncio.ensure_future(self._query(guild_id))
            self._queries[guild_id] = pending
            pending.add_done_callback(partial(self._query_done, guild_id))
        return await asyncio.shield(pending)

    def _query_done(self, guild_id: int, query: asyncio.Future[int | None]) -> None:
        if self._queries.get(guild_id) is query:
            del self._queries[guild_id]

    async def _query(self, guild_id: int) -> int | None:
        epoch = self._epoch
        self.queries += 1
        settings = await run_transaction_async(
            self.factory, lambda session: get_arena_settings(session, guild_id)
        )
        if epoch == self._epoch:  # not read before an admin's change
            self._channels[guild_id] = (time.monotonic(), settings.arena_channel_id)
        return settings.arena_channel_id

    def forget(self, guild_id: int | None = None) -> None:
        """Drop the cached arena channel of ``guild_id`` (None: of every guild)."""
        if guild_id is None:
            self._channels.clear()
        else:
            self._channels.pop(guild_id, None)
        self._queries.clear()  # a query in flight may have read the old settings
        self._epoch += 1


def prompt_of(message: discord.Message, bot_user_id: int | None) -> str | None:
    """The prompt a message in an arena channel carries, None when it is no prompt: a bot's,
    a webhook's or a system message, a reply, anything but an ordinary message, a thread's,
    no text (attachments only), text over the command's limit, or a command."""
    if message.author.bot or message.webhook_id is not None or message.is_system():
        return None
    if message.type is not discord.MessageType.default or message.reference is not None:
        return None
    if isinstance(message.channel, discord.Thread):
        return None
    text = message.content.strip()
    if not text or len(text) > MAX_PROMPT_CHARS:
        return None
    mentions = () if bot_user_id is None else (f"<@{bot_user_id}>", f"<@!{bot_user_id}>")
    if text.startswith(COMMAND_STARTS + mentions):
        return None
    return text


class ArenaChannelCog(commands.Cog):
    """Listens to messages: those in a guild's arena channel become duels."""

    def __init__(self, bot: DiscordBot, services: BotServices) -> None:
        self.bot = bot
        self.services = services
        self.channels = ArenaChannels(services.async_factory)
        # What became of recent messages (message id -> outcome): a replay seen by this
        # process is answered from here; tests wait on it.
        self.outcomes: OrderedDict[int, ChannelOutcome] = OrderedDict()
        self._in_flight: dict[int, asyncio.Future[ChannelOutcome]] = {}
        self._noted: dict[tuple[int, int, ChannelOutcome], float] = {}

    @commands.Cog.listener()
    async def on_arena_settings_changed(self, guild_id: int) -> None:
        """``/hps admin arena`` changed a guild's settings (dispatched by the command)."""
        self.channels.forget(guild_id)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is None:
            return
        try:
            outcome = await self.handle(message)
        except Exception:
            metrics.count_error("arena_channel")
            log.exception("arena channel message %s not handled", message.id)
            return
        if outcome is not ChannelOutcome.ignored:
            log.info("arena channel message %s: %s", message.id, outcome)

    async def handle(self, message: discord.Message) -> ChannelOutcome:
        """Run a duel on ``message`` if it is a prompt in its guild's arena channel; what
        became of it (also kept in :attr:`outcomes`)."""
        known = self.outcomes.get(message.id)
        if known is not None:
            return ChannelOutcome.duplicate if known is ChannelOutcome.duel else known
        running = self._in_flight.get(message.id)
        if running is not None:  # the same message delivered twice at once
            await asyncio.shield(running)
            return ChannelOutcome.duplicate
        task = asyncio.ensure_future(self._handle(message))
        self._in_flight[message.id] = task
        try:
            outcome = await asyncio.shield(task)
        finally:
            self._in_flight.pop(message.id, None)
        self._remember(message.id, outcome)
        return outcome

    def _remember(self, message_id: int, outcome: ChannelOutcome) -> None:
        self.outcomes[message_id] = outcome
        while len(self.outcomes) > REMEMBERED_MESSAGES:
            self.outcomes.popitem(last=False)

    async def _handle(self, message: discord.Message) -> ChannelOutcome:
        assert message.guild is not None
        prompt = prompt_of(message, getattr(self.bot.user, "id", None))
        if prompt is None:
            return ChannelOutcome.ignored
        if await self.channels.of(message.guild.id) != message.channel.id:
            return ChannelOutcome.ignored
        request = ChannelPrompt(
            message.guild.id, message.channel.id, message.id, message.author.id, prompt
        )
        outcome, reason = await self._start(request)
        await self._answer(message, outcome, reason)
        return outcome

    async def _start(self, request: ChannelPrompt) -> tuple[ChannelOutcome, str | None]:
        """Create the duel and send its job: the outcome, and a refusal's own words."""
        settings = self.services.settings
        start = partial(
            start_channel_duel,
            request=request,
            generator=generator_name(settings.sd_pipeline),
            limits=UserJobLimits(settings.user_jobs_per_minute, settings.user_max_open_jobs),
        )
        try:
            outcome, job_id = await run_transaction_async(self.services.async_factory, start)
        except JobLimitReached as exc:
            return ChannelOutcome.limit, str(exc)
        except UserOptedOut:
            return ChannelOutcome.opted_out, None
        except ConsentRequired:
            return ChannelOutcome.consent_required, None
        except DomainError as exc:
            metrics.count_error(exc)
            log.warning("arena channel prompt %s refused: %s", request.message_id, exc)
            return ChannelOutcome.failed, None
        if outcome is ChannelOutcome.duel and job_id is not None:
            send = partial(enqueue_job, self.services.celery, self.services.factory)
            try:
                await asyncio.get_running_loop().run_in_executor(None, send, "duel", job_id)
            except EnqueueError:  # the job is failed, and its failure posted, by enqueue_job
                log.warning("duel job %s of message %s not sent", job_id, request.message_id)
        return outcome, None

    async def _answer(
        self, message: discord.Message, outcome: ChannelOutcome, reason: str | None
    ) -> None:
        """A refusal's note: a reply that pings nobody, once per member, reason and
        :data:`NOTE_INTERVAL_S`; nothing for an accepted or duplicate prompt."""
        text = f"No duel: {reason}." if outcome is ChannelOutcome.limit else NOTES.get(outcome)
        if text is None or not self._may_note(message, outcome):
            return
        none = discord.AllowedMentions.none()
        try:
            await message.reply(fit_content(text), mention_author=False, allowed_mentions=none)
        except discord.HTTPException as exc:  # deleted meanwhile, or no permission to post
            log.info("note on arena channel message %s not posted: %r", message.id, exc)

    def _may_note(self, message: discord.Message, outcome: ChannelOutcome) -> bool:
        assert message.guild is not None
        now = time.monotonic()
        key = (message.guild.id, message.author.id, outcome)
        last = self._noted.get(key)
        if last is not None and now - last < NOTE_INTERVAL_S:
            return False
        self._noted = {k: t for k, t in self._noted.items() if now - t < NOTE_INTERVAL_S}
        self._noted[key] = now
        return True


def arena_channel_cog(bot: DiscordBot) -> ArenaChannelCog | None:
    """The bot's arena channel cog (None before it is loaded)."""
    cog = bot.get_cog(ArenaChannelCog.__cog_name__)
    return cog if isinstance(cog, ArenaChannelCog) else None
