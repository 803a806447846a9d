"""Posting job results: LISTEN on the outbox channel (polling as a fallback, and the only way
on SQLite), claim due rows with SKIP LOCKED, post each one, stamp it delivered.

A result goes back through the interaction's webhook while its token is valid (15 minutes),
else to the channel. A round drains every due row, channels side by side (one slow or broken
channel does not hold up the others), rows of one channel in order. A failed post is classified
(:func:`classify_failure`): one that may pass (Discord 5xx or 429, the network, a timeout) is
retried later with backoff (db.outbox.backoff_delay); one that cannot (Discord refused it with a
4xx, a file is missing from the store), or the last allowed attempt, makes the row a dead
letter: logged, counted, kept for admins (``hps outbox dead``), and its requester is told once,
briefly, that the result could not be posted.

Any number of bot processes may deliver side by side (a sharded bot runs several; REST posting
works from any of them): a row is posted only by the deliverer whose claim holds its lease. A
claim leases its rows for :data:`LEASE_S`; a row whose post would start too close to the end
of that lease (the rows behind slow ones in a big round) has its lease renewed first, which
fails if another deliverer claimed it meanwhile: then this one leaves it alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiohttp
import discord
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bot import metrics
from bot.arena import (
    duel_view,
    gate_decision_text,
    queue_scheduled_duels,
    render_duel,
    reveal_text,
    sweep_due_duels,
)
from bot.formatting import only_pings, render_result
from bot.picks import pick_view
from bot.services import BotServices, DiscordBot, services_of
from db.arena import open_duel
from db.engine import run_transaction_async
from db.errors import DomainError
from db.ingest import GenerationIn, ImageIn, record_generation
from db.jobs import get_job
from db.outbox import (
    CLAIM_LEASE_S,
    OUTBOX_CHANNEL,
    OutboxKind,
    claim_pending_outbox,
    mark_outbox_delivered,
    record_outbox_failure,
    renew_outbox_lease,
)
from jobqueue.contracts import GenerateDelivery
from jobqueue.submit import EnqueueError, enqueue_job, send_unsent_jobs
from media.store import BlobIntegrityError, BlobNotFound, key_for

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 5.0
BATCH = 20
POST_TIMEOUT_S = 120.0  # one post, discord.py's own 5xx/429 retries included (< the lease)
LEASE_S = CLAIM_LEASE_S  # how long a claim keeps other deliverers off its rows
LEASE_MARGIN_S = 10.0  # a post starts only with its timeout and this much lease left
NOTICE_TIMEOUT_S = 30.0
CHANNELS_AT_ONCE = 8

# Why a dead letter's requester is told their result did not come (never user or error text).
DEAD_NOTICE_WHY = {
    "discord_refused": "Discord refused it",
    "file_missing": "a file of it is missing",
    "file_corrupt": "a file of it is damaged",
    "retries_exhausted": "Discord kept failing",
}


def classify_failure(exc: BaseException) -> tuple[str, bool]:
    """``(reason, permanent)`` for a failed post. Permanent: Discord refused the message (a
    4xx, except 429 and 401: a 401 is about the bot's credentials, not this message) or a file
    of it is missing or damaged in the store. Anything else may pass."""
    if isinstance(exc, BlobNotFound):
        return "file_missing", True
    if isinstance(exc, BlobIntegrityError):
        return "file_corrupt", True
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429:
            return "rate_limited", False
        if exc.status == 401:
            return "unauthorized", False
        if 400 <= exc.status < 500:
            return "discord_refused", True
        return "server_error", False
    if isinstance(exc, TimeoutError):
        return "timeout", False
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "network", False
    return "unexpected", False


def describe_failure(exc: BaseException, token: str | None) -> str:
    """The failure as admins see it in ``last_error`` and the log: the exception's class and
    message, with the interaction token (a credential) blanked out."""
    detail = f"{type(exc).__name__}: {exc}"
    return detail.replace(token, "<token>") if token else detail


class OutboxDelivery:
    """Posts the outbox's rows to Discord (``bot``) with the bot process's ``services``."""

    def __init__(self, bot: DiscordBot, services: BotServices | None = None) -> None:
        self.bot = bot
        self.services = services or services_of(bot)
        self.wake = asyncio.Event()
        self.delivered = 0

    async def run(self) -> None:
        """Deliver forever: on every notification, and every few seconds regardless. The
        timed rounds (at most one per :data:`POLL_INTERVAL_S`, never a NOTIFY wake's) also
        close overdue duels and queue the arena's scheduled duels."""
        listener = asyncio.create_task(self._listen())
        last_timed = -math.inf
        try:
            while True:
                try:
                    if time.monotonic() - last_timed >= POLL_INTERVAL_S:
                        last_timed = time.monotonic()
                        await self.timed_round()
                    await self.deliver_pending()
                except Exception:  # the database away for a moment: try again next round
                    metrics.count_error("delivery")
                    log.exception("outbox delivery round failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), POLL_INTERVAL_S)
                self.wake.clear()
        finally:
            listener.cancel()

    async def timed_round(self) -> None:
        """Close the duels past their deadline (reveals, gate decisions), send the jobs a
        client recorded but never sent (it died in between: jobqueue.submit.send_unsent_jobs),
        then queue the duel jobs of the human gate's scheduled duels: each job is recorded on
        its duel in one transaction, then sent (a bot that dies in between leaves it to be
        sent again)."""
        await run_transaction_async(self.services.async_factory, sweep_due_duels)
        orphans = partial(send_unsent_jobs, self.services.celery, self.services.factory)
        for orphan in await asyncio.get_running_loop().run_in_executor(None, orphans):
            metrics.count_error("orphan_job_sent" if orphan.sent else "orphan_job_enqueue")
        job_ids = await run_transaction_async(self.services.async_factory, queue_scheduled_duels)
        if not job_ids:
            return
        loop = asyncio.get_running_loop()
        services = self.services
        for job_id in job_ids:
            send = partial(enqueue_job, services.celery, services.factory, "duel", job_id)
            try:
                await loop.run_in_executor(None, send)
            except EnqueueError as exc:  # the job is failed; its duel closes next round
                metrics.count_error("gate_enqueue")
                log.warning("scheduled duel job %s not sent: %s", job_id, exc)

    async def _listen(self) -> None:
        url = make_url(self.services.settings.database_url)
        if url.get_backend_name() != "postgresql":
            return  # SQLite: polling only
        import psycopg

        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    dsn, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    self.wake.set()  # catch up on anything written while not listening
                    async for _notification in connection.notifies():
                        self.wake.set()
            except (OSError, psycopg.Error) as exc:
                metrics.count_error("outbox_listen")
                log.warning("outbox LISTEN connection lost (%s); polling until it is back", exc)
                await asyncio.sleep(POLL_INTERVAL_S)

    async def deliver_pending(self) -> int:
        """Deliver every row due now (batch after batch, until none is left); return how many
        were posted. Rows that fail are rescheduled or dead, so they are not due again."""
        posted = 0
        while True:
            claimed_at = time.monotonic()  # no later than the lease's start in the database
            rows = await run_transaction_async(
                self.services.async_factory, self._claim_and_describe
            )
            for row in rows:
                row["lease_ends"] = claimed_at + LEASE_S
            by_channel: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                by_channel[row["channel_id"]].append(row)
            slots = asyncio.Semaphore(CHANNELS_AT_ONCE)
            outcomes = await asyncio.gather(
                *(self._deliver_in_order(group, slots) for group in by_channel.values()),
                return_exceptions=True,
            )
            posted += sum(n for n in outcomes if isinstance(n, int))
            errors = [e for e in outcomes if isinstance(e, BaseException)]
            if errors:  # the database failed under a channel: the rest of the round waits
                self.delivered += posted
                raise errors[0]
            if len(rows) < BATCH:
                break
        self.delivered += posted
        return posted

    async def _deliver_in_order(self, rows: list[dict[str, Any]], slots: asyncio.Semaphore) -> int:
        """One channel's rows, in the order they were claimed."""
        async with slots:
            delivered = [await self._deliver(row) for row in rows]
        return sum(delivered)

    async def _deliver(self, row: dict[str, Any]) -> bool:
        """Post one claimed row and stamp it, or record why it failed; never raises for the
        row's own failure."""
        if not await self._hold_lease(row):
            return False
        try:
            async with asyncio.timeout(POST_TIMEOUT_S):
                posted = await self._post(row)
        except Exception as exc:  # Discord refused it, a file is missing, the network...
            await self._failed(row, exc)
            return False
        stamped = await run_transaction_async(
            self.services.async_factory, partial(mark_outbox_delivered, outbox_id=row["id"])
        )
        if not stamped:  # its lease ran out mid-post and another deliverer settled it
            log.warning("outbox row %s was settled by another deliverer meanwhile", row["id"])
        if row["kind"] == OutboxKind.duel_posted and posted is not None:
            await self._open_duel(row["payload"], posted)
        if row["kind"] == OutboxKind.generate_result and posted is not None:
            # After the stamp: a failure here must not make the result post a second time.
            try:
                await self._record_generation(row["payload"], posted, row.get("guild_id"))
            except Exception:
                metrics.count_error("delivery_record")
                log.exception("posted generation %s could not be recorded", posted.id)
        return True

    async def _hold_lease(self, row: dict[str, Any]) -> bool:
        """Whether this deliverer may post ``row`` now: its lease outlasts the post, or it was
        renewed (which fails when another deliverer claimed the row after the lease ran out:
        the row is that one's to post)."""
        if time.monotonic() + POST_TIMEOUT_S + LEASE_MARGIN_S < row["lease_ends"]:
            return True
        renewing_at = time.monotonic()
        renewed = await run_transaction_async(
            self.services.async_factory,
            partial(
                renew_outbox_lease, outbox_id=row["id"], attempts=row["attempts"], lease_s=LEASE_S
            ),
        )
        if renewed:
            row["lease_ends"] = renewing_at + LEASE_S
            return True
        log.info("outbox row %s was claimed by another deliverer meanwhile; left to it", row["id"])
        return False

    async def _failed(self, row: dict[str, Any], exc: Exception) -> None:
        metrics.count_error("delivery")
        reason, permanent = classify_failure(exc)
        detail = describe_failure(exc, row["token"])
        outcome = await run_transaction_async(
            self.services.async_factory,
            partial(
                record_outbox_failure,
                outbox_id=row["id"],
                error=f"{reason}: {detail}",
                permanent=permanent,
            ),
        )
        if not outcome.dead:
            metrics.count_outbox_retry(reason)
            log.warning(
                "outbox row %s not posted (%s, attempt %d): %s; retrying at %s",
                row["id"],
                reason,
                outcome.attempts,
                detail,
                outcome.retry_at.isoformat() if outcome.retry_at else "-",
                exc_info=exc if reason == "unexpected" else None,
            )
            return
        dead_reason = reason if permanent else "retries_exhausted"
        metrics.count_dead_letter(dead_reason)
        log.warning(
            "outbox row %s is a dead letter (%s after %d attempts): %s",
            row["id"],
            dead_reason,
            outcome.attempts,
            detail,
            exc_info=exc if reason == "unexpected" else None,
        )
        await self._tell_requester(row, dead_reason)

    async def _tell_requester(self, row: dict[str, Any], reason: str) -> None:
        """Tell the requester, once and briefly, that their result will not come: privately
        through the interaction while its token is valid, else in the channel. Best effort:
        a failure is logged, never retried."""
        requester = row["requester_id"]
        if requester is None:
            return
        why = DEAD_NOTICE_WHY.get(reason, "it failed")
        text = (
            f"Sorry <@{requester}>, your result could not be posted ({why}); "
            "the admins can see why."
        )
        mentions = only_pings(requester)
        token, expires = row["token"], row["expires"]
        try:
            async with asyncio.timeout(NOTICE_TIMEOUT_S):
                if token and expires and expires > datetime.now(UTC):
                    await self._followup(token).send(
                        text, ephemeral=True, allowed_mentions=mentions
                    )
                elif row["channel_id"]:
                    channel = await self._channel(row["channel_id"])
                    await channel.send(text, allowed_mentions=mentions)
        except Exception as exc:  # the channel is gone too, Discord is down...: the log has it
            metrics.count_error("delivery_notice")
            log.warning(
                "could not tell the requester of dead outbox row %s (%s)",
                row["id"],
                type(exc).__name__,
            )

    @staticmethod
    def _claim_and_describe(session: Session) -> list[dict[str, Any]]:
        described = []
        for row in claim_pending_outbox(session, BATCH, lease_s=LEASE_S):
            token, expires, requester = None, None, None
            if row.job_id is not None:
                job = get_job(session, row.job_id)
                token, expires = job.interaction_token, job.interaction_expires_at
                requester = job.requested_by
            if requester is None and str(row.payload.get("requested_by") or "").isdigit():
                requester = int(row.payload["requested_by"])
            described.append(
                {
                    "id": row.id,
                    "attempts": row.attempts,
                    "kind": row.kind,
                    "payload": row.payload,
                    "channel_id": row.channel_id,
                    "guild_id": row.guild_id,
                    "token": token,
                    "expires": expires,
                    "requester_id": requester,
                }
            )
        return described

    def _followup(self, token: str) -> discord.Webhook:
        """The follow-up webhook of an interaction (an application webhook: it may post
        ephemeral messages), as ``interaction.followup`` builds it."""
        application_id = self.bot.application_id
        assert application_id is not None, "the bot is logged in"
        return discord.Webhook.from_state(
            {"id": application_id, "type": 3, "token": token}, self.bot._connection
        )

    async def _channel(self, channel_id: int) -> Any:
        """A channel by id (cached, else fetched); posting to it fails for one that takes
        no messages, like any other failed post."""
        channel = self.bot.get_channel(channel_id)
        if channel is None:
            channel = await self.bot.fetch_channel(channel_id)
        return channel

    async def _open_duel(self, payload: dict[str, Any], posted: Any) -> None:
        """A posted duel opens for votes (after the stamp, like a generation's record)."""
        try:
            await run_transaction_async(
                self.services.async_factory,
                partial(open_duel, duel_id=int(payload["duel_id"]), message_id=posted.id),
            )
        except Exception:
            metrics.count_error("delivery_record")
            log.exception("posted duel %s could not be opened", payload.get("duel_id"))

    async def _post_duel(self, row: dict[str, Any]) -> Any:
        """A duel is posted to its channel (so its reveal can edit it later, whatever the
        interaction's age); a reveal edits that message: sides named, tally, no buttons."""
        if not row["channel_id"]:
            return None
        channel = await self._channel(row["channel_id"])
        payload = row["payload"]
        none = discord.AllowedMentions.none()
        if row["kind"] == OutboxKind.duel_reveal:
            message = channel.get_partial_message(int(payload["message_id"]))
            return await message.edit(
                content=reveal_text(payload), view=None, allowed_mentions=none
            )
        post = render_duel(payload, self.services.store)
        view = duel_view(int(payload["duel_id"]))
        return await channel.send(post.content, files=post.files, view=view, allowed_mentions=none)

    async def _post(self, row: dict[str, Any]) -> Any:
        """Post one row; return the message posted (None when it had nowhere to go)."""
        if row["kind"] in (OutboxKind.duel_posted, OutboxKind.duel_reveal):
            return await self._post_duel(row)
        if row["kind"] == OutboxKind.gate_decision:
            if not row["channel_id"]:
                return None
            channel = await self._channel(row["channel_id"])
            text = gate_decision_text(row["payload"])
            return await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        post = render_result(row["kind"], row["payload"], self.services.store)
        content, files = post.content, post.files
        is_generation = row["kind"] == OutboxKind.generate_result
        extra: dict[str, Any] = {"allowed_mentions": post.allowed_mentions}
        if is_generation:
            extra["view"] = pick_view(len(files))
        token, expires = row["token"], row["expires"]
        posted: Any = None
        if token and expires and expires > datetime.now(UTC):
            webhook = self._followup(token)
            # A failure is the requester's business: private while the interaction lives
            # (the command's first follow-up already took the deferral, so flags hold).
            posted = await webhook.send(
                content, files=files, wait=True, ephemeral=post.private, **extra
            )
        else:
            if row["channel_id"]:
                channel = await self._channel(row["channel_id"])
                posted = await channel.send(content, files=files, **extra)
        return posted

    async def _record_generation(
        self, payload: dict[str, Any], posted: Any, guild_id: int | None
    ) -> None:
        """The bot's own generation becomes harvestable once it is posted: its message id is
        the one the pick buttons refer to. It is the guild's where the job was asked for (an
        interaction follow-up comes back from Discord without a guild)."""
        result = GenerateDelivery.model_validate(payload)
        images = [
            ImageIn(i.sha256, key_for(i.sha256), i.width, i.height, i.phash, i.seed)
            for i in result.images
        ]
        lora = result.lora_version
        generation = GenerationIn(
            source_message_id=posted.id,
            channel_id=posted.channel.id,
            guild_id=posted.guild.id if posted.guild else guild_id,
            prompt=result.prompt,
            generator=f"hps-sd{'+' + lora.name if lora else ''}",
            images=images,
            requester_id=result.requested_by,
            params={"steps": result.steps, "negative_prompt": result.negative_prompt},
        )
        try:
            await run_transaction_async(
                self.services.async_factory, partial(record_generation, generation=generation)
            )
        except DomainError as exc:  # e.g. the requester opted out meanwhile
            log.info("generation %s not recorded: %s", posted.id, exc)
