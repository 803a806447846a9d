"""Posting job results: LISTEN on the outbox channel (polling as a fallback, and the only way
on SQLite), claim rows with SKIP LOCKED, post each one, stamp it delivered.

A result goes back through the interaction's webhook while its token is valid (15 minutes),
else to the channel. A failed post is counted and retried on the next round."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

import discord
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bot import metrics
from bot.formatting import render_result
from bot.picks import pick_view
from db.engine import run_transaction_async
from db.errors import DomainError
from db.ingest import GenerationIn, ImageIn, record_generation
from db.jobs import get_job
from db.outbox import (
    OUTBOX_CHANNEL,
    claim_pending_outbox,
    mark_outbox_delivered,
    record_outbox_failure,
)
from media.store import key_for

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 5.0
BATCH = 20


class OutboxDelivery:
    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.wake = asyncio.Event()
        self.delivered = 0

    async def run(self) -> None:
        """Deliver forever: on every notification, and every few seconds regardless."""
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                try:
                    await self.deliver_pending()
                except Exception:  # the database away for a moment: try again next round
                    metrics.count_error("delivery")
                    log.exception("outbox delivery round failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), POLL_INTERVAL_S)
                self.wake.clear()
        finally:
            listener.cancel()

    async def _listen(self) -> None:
        url = make_url(self.bot.settings.database_url)
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
        """Deliver what is pending now; return how many rows were posted."""
        rows = await run_transaction_async(self.bot.factory, self._claim_and_describe)
        posted = 0
        for row in rows:
            try:
                await self._post(row)
            except Exception as exc:  # Discord refused it, or a file is missing: count, go on
                metrics.count_error("delivery")
                if not isinstance(exc, discord.HTTPException):
                    log.exception("outbox row %s could not be posted", row["id"])
                error = f"{type(exc).__name__}: {exc}"
                await run_transaction_async(
                    self.bot.factory,
                    partial(record_outbox_failure, outbox_id=row["id"], error=error),
                )
                continue
            await run_transaction_async(
                self.bot.factory, partial(mark_outbox_delivered, outbox_id=row["id"])
            )
            posted += 1
        self.delivered += posted
        return posted

    @staticmethod
    def _claim_and_describe(session: Session) -> list[dict[str, Any]]:
        described = []
        for row in claim_pending_outbox(session, BATCH):
            token, expires = None, None
            if row.job_id is not None:
                job = get_job(session, row.job_id)
                token, expires = job.interaction_token, job.interaction_expires_at
            described.append(
                {
                    "id": row.id,
                    "kind": row.kind,
                    "payload": row.payload,
                    "channel_id": row.channel_id,
                    "token": token,
                    "expires": expires,
                }
            )
        return described

    async def _post(self, row: dict[str, Any]) -> None:
        post = render_result(row["kind"], row["payload"], self.bot.store)
        content, files = post.content, post.files
        is_generation = row["kind"] == "generate_result"
        extra: dict[str, Any] = {"allowed_mentions": post.allowed_mentions}
        if is_generation:
            extra["view"] = pick_view(len(files))
        token, expires = row["token"], row["expires"]
        posted: Any = None
        if token and expires and expires > datetime.now(UTC):
            webhook = discord.Webhook.partial(
                self.bot.application_id, token, session=self.bot.http_session, client=self.bot
            )
            posted = await webhook.send(content, files=files, wait=True, **extra)
        else:
            channel = self.bot.get_channel(row["channel_id"]) if row["channel_id"] else None
            if channel is None and row["channel_id"]:
                channel = await self.bot.fetch_channel(row["channel_id"])
            if channel is not None:
                posted = await channel.send(content, files=files, **extra)
        if is_generation and posted is not None:
            await self._record_generation(row["payload"], posted)

    async def _record_generation(self, payload: dict[str, Any], posted: Any) -> None:
        """The bot's own generation becomes harvestable once it is posted: its message id is
        the one the pick buttons refer to."""
        images = [
            ImageIn(
                i["sha256"],
                key_for(i["sha256"]),
                i["width"],
                i["height"],
                i.get("phash", ""),
                i.get("seed"),
            )
            for i in payload.get("images", [])
        ]
        lora = payload.get("lora_version")
        generation = GenerationIn(
            source_message_id=posted.id,
            channel_id=posted.channel.id,
            guild_id=posted.guild.id if posted.guild else None,
            prompt=payload["prompt"],
            generator=f"hps-sd{'+' + lora['name'] if lora else ''}",
            images=images,
            requester_id=payload.get("requested_by"),
            params={
                "steps": payload.get("steps"),
                "negative_prompt": payload.get("negative_prompt"),
            },
        )
        try:
            await run_transaction_async(
                self.bot.factory, partial(record_generation, generation=generation)
            )
        except DomainError as exc:  # e.g. the requester opted out meanwhile
            log.info("generation %s not recorded: %s", posted.id, exc)
