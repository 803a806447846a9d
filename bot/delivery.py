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

from bot.formatting import render_result
from db.engine import run_transaction_async
from db.jobs import get_job
from db.outbox import (
    OUTBOX_CHANNEL,
    claim_pending_outbox,
    mark_outbox_delivered,
    record_outbox_failure,
)

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
                await self.deliver_pending()
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
                log.warning("outbox LISTEN connection lost (%s); polling until it is back", exc)
                await asyncio.sleep(POLL_INTERVAL_S)

    async def deliver_pending(self) -> int:
        """Deliver what is pending now; return how many rows were posted."""
        rows = await run_transaction_async(self.bot.factory, self._claim_and_describe)
        posted = 0
        for row in rows:
            try:
                await self._post(row)
            except discord.HTTPException as exc:
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
        content, files = render_result(row["kind"], row["payload"], self.bot.store)
        token, expires = row["token"], row["expires"]
        if token and expires and expires > datetime.now(UTC):
            webhook = discord.Webhook.partial(
                self.bot.application_id, token, session=self.bot.http_session, client=self.bot
            )
            await webhook.send(content, files=files)
            return
        channel = self.bot.get_channel(row["channel_id"]) if row["channel_id"] else None
        if channel is None and row["channel_id"]:
            channel = await self.bot.fetch_channel(row["channel_id"])
        if channel is not None:
            await channel.send(content, files=files)
