"""Result delivery cannot jam: rows Discord refuses (or whose files are gone) become dead
letters at once and their requester is told once; a failure that may pass backs off and the
row is posted later, once; a good row written behind 20 poison rows goes out in the same round.
Real discord.py against the emulator and PostgreSQL; the tests drive the delivery rounds."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.client import HpsBot
from bot.delivery import OutboxDelivery, classify_failure, describe_failure
from bot.metrics import REGISTRY
from db.jobs import create_job
from db.models import OutboxMessage, utcnow
from db.outbox import write_outbox
from media.store import BlobIntegrityError, BlobNotFound
from sandbox.emulator import DiscordEmulator
from tests.bot.helpers import eventually

UNKNOWN_CHANNEL = 4_242_424_242
MISSING_SHA = "0" * 64


def write(
    factory: sessionmaker[Session], payload: dict[str, Any], channel_id: int, **kw: Any
) -> int:
    with factory() as session, session.begin():
        outbox_id = write_outbox(session, "notice", payload, channel_id=channel_id, **kw)
    assert outbox_id is not None
    return outbox_id


def outbox(factory: sessionmaker[Session]) -> dict[int, OutboxMessage]:
    with factory() as session:
        rows = {r.id: r for r in session.scalars(select(OutboxMessage))}
        session.expunge_all()
        return rows


def sample(name: str, reason: str) -> float:
    return REGISTRY.get_sample_value(f"hps_bot_{name}_total", {"reason": reason}) or 0.0


def channel_posts(emulator: DiscordEmulator, channel_id: int) -> list[dict[str, Any]]:
    return [c.body for c in emulator.calls_to("POST", f"/channels/{channel_id}/messages")]


def only_requester_pinged(body: dict[str, Any], user_id: int) -> bool:
    """Discord pings exactly the users listed here, no roles, no @everyone/@here."""
    mentions = body["allowed_mentions"]
    return (
        mentions.get("parse") == []
        and [int(u) for u in mentions.get("users", [])] == [user_id]
        and not mentions.get("roles")
        and not mentions.get("replied_user")
    )


async def test_twenty_poison_rows_do_not_hold_up_a_good_row(
    bot_alone: tuple[DiscordEmulator, HpsBot], pg_factory: sessionmaker[Session]
) -> None:
    emulator, bot = bot_alone
    general = emulator.channels["general"]
    alice, bob = emulator.add_user("alice"), emulator.add_user("bob")
    refused_before = sample("outbox_dead_letters", "discord_refused")
    missing_before = sample("outbox_dead_letters", "file_missing")
    # 18 results for a channel Discord does not know (404), 2 whose chart left the store.
    refused = [
        write(pg_factory, {"text": f"r{n}", "requested_by": alice}, UNKNOWN_CHANNEL)
        for n in range(18)
    ]
    missing = [
        write(
            pg_factory,
            {
                "text": "chart",
                "files": [{"sha256": MISSING_SHA, "filename": "c.png"}],
                "requested_by": alice,
            },
            general,
        )
        for _ in range(2)
    ]
    good = write(pg_factory, {"text": "all good", "requested_by": bob}, general)

    assert await bot.delivery.deliver_pending() == 1  # one round
    posts = channel_posts(emulator, general)
    results = [p for p in posts if "all good" in p["content"]]
    assert len(results) == 1 and results[0]["content"].startswith(f"<@{bob}> ")
    rows = outbox(pg_factory)
    assert rows[good].delivered_at is not None and rows[good].attempts == 1
    for outbox_id in refused + missing:
        assert rows[outbox_id].dead_at is not None and rows[outbox_id].delivered_at is None
        assert rows[outbox_id].attempts == 1
    assert all(
        (rows[i].last_error or "").startswith("discord_refused: NotFound: 404") for i in refused
    )
    assert all((rows[i].last_error or "").startswith("file_missing: ") for i in missing)
    assert sample("outbox_dead_letters", "discord_refused") == refused_before + 18
    assert sample("outbox_dead_letters", "file_missing") == missing_before + 2

    # The requester hears about each result that cannot come, in the channel (no token),
    # pinging only them; the notices for the unknown channel could not be posted at all.
    notices = [p for p in posts if p["content"].startswith("Sorry")]
    assert [n["content"] for n in notices] == [
        f"Sorry <@{alice}>, your result could not be posted (a file of it is missing); "
        "the admins can see why."
    ] * 2
    assert all(only_requester_pinged(n, alice) for n in notices)
    calls = len(emulator.calls)
    assert await bot.delivery.deliver_pending() == 0  # nothing is retried, nobody told twice
    assert len(emulator.calls) == calls


async def test_a_passing_failure_backs_off_and_the_row_is_posted_once(
    bot_alone: tuple[DiscordEmulator, HpsBot],
    pg_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator, bot = bot_alone
    general = emulator.channels["general"]
    carol = emulator.add_user("carol")
    retries_before = sample("outbox_retries", "server_error")
    real_post = OutboxDelivery._post
    response: Any = SimpleNamespace(status=503, reason="Service Unavailable")
    failures = iter([discord.DiscordServerError(response, "down")])

    async def flaky_post(self: OutboxDelivery, row: dict[str, Any]) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure  # Discord answered 503 (after discord.py's own retries)
        return await real_post(self, row)

    monkeypatch.setattr(OutboxDelivery, "_post", flaky_post)
    outbox_id = write(pg_factory, {"text": "later", "requested_by": carol}, general)
    started = utcnow()
    assert await bot.delivery.deliver_pending() == 0
    row = outbox(pg_factory)[outbox_id]
    assert row.attempts == 1 and row.dead_at is None and row.delivered_at is None
    assert (row.last_error or "").startswith("server_error: DiscordServerError: 503")
    wait = (row.next_attempt_at - started).total_seconds()
    assert 4.4 < wait < 6.0  # 5 s +-10%
    assert sample("outbox_retries", "server_error") == retries_before + 1
    assert await bot.delivery.deliver_pending() == 0  # not due yet: not tried
    assert outbox(pg_factory)[outbox_id].attempts == 1

    await asyncio.sleep((row.next_attempt_at - utcnow()).total_seconds() + 0.1)
    assert await bot.delivery.deliver_pending() == 1
    assert await bot.delivery.deliver_pending() == 0
    row = outbox(pg_factory)[outbox_id]
    assert row.delivered_at is not None and row.attempts == 2 and row.last_error is None
    assert [p["content"] for p in channel_posts(emulator, general)] == [f"<@{carol}> later"]


async def test_a_dead_result_is_announced_privately_through_the_interaction_once(
    bot_alone: tuple[DiscordEmulator, HpsBot], pg_factory: sessionmaker[Session]
) -> None:
    emulator, bot = bot_alone
    dave = emulator.add_user("dave")
    optin = [{"name": "privacy", "type": 2, "options": [{"name": "optin", "type": 1}]}]
    token = await emulator.inject_slash_command(dave, "general", "hps", optin)
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.followups), 10)  # "Opted in: thank you."
    with pg_factory() as session, session.begin():
        job = create_job(
            session,
            "stats",
            requested_by=dave,
            channel_id=emulator.channels["general"],
            interaction_token=token,
            interaction_expires_at=utcnow() + timedelta(minutes=14),
        )
        job_id: uuid.UUID = job.id
    outbox_id = write(
        pg_factory,
        {"text": "<@&1> @everyone chart", "files": [{"sha256": MISSING_SHA, "filename": "c.png"}]},
        emulator.channels["general"],
        job_id=job_id,
    )
    before = len(record.followups)
    assert await bot.delivery.deliver_pending() == 0
    assert outbox(pg_factory)[outbox_id].dead_at is not None
    [notice] = record.followups[before:]
    assert notice["content"] == (
        f"Sorry <@{dave}>, your result could not be posted (a file of it is missing); "
        "the admins can see why."
    )
    assert notice["flags"] & 64  # ephemeral
    [call] = [
        c
        for c in emulator.calls_to("POST", f"/webhooks/{emulator.application_id}/{token}")
        if c.body and c.body.get("content", "").startswith("Sorry")
    ]
    assert only_requester_pinged(call.body, dave)
    assert token not in (outbox(pg_factory)[outbox_id].last_error or "")
    assert await bot.delivery.deliver_pending() == 0
    assert len(record.followups) == before + 1  # told once


def http_error(status: int, code: int = 0) -> discord.HTTPException:
    response: Any = SimpleNamespace(status=status, reason="x")
    return discord.HTTPException(response, {"message": "m", "code": code})


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (http_error(400, 50035), ("discord_refused", True)),  # invalid form body
        (http_error(403, 50001), ("discord_refused", True)),  # missing access
        (http_error(404, 10003), ("discord_refused", True)),  # unknown channel
        (http_error(404, 10015), ("discord_refused", True)),  # unknown webhook
        (http_error(429), ("rate_limited", False)),
        (http_error(401), ("unauthorized", False)),  # the bot's credentials, not the message
        (http_error(503), ("server_error", False)),
        (BlobNotFound("ab"), ("file_missing", True)),
        (BlobIntegrityError("ab"), ("file_corrupt", True)),
        (TimeoutError(), ("timeout", False)),
        (aiohttp.ServerDisconnectedError(), ("network", False)),
        (ConnectionResetError(), ("network", False)),
        (KeyError("prompt"), ("unexpected", False)),
    ],
)
def test_failures_are_classified(failure: BaseException, expected: tuple[str, bool]) -> None:
    assert classify_failure(failure) == expected


def test_the_interaction_token_never_reaches_the_reason() -> None:
    failure = aiohttp.InvalidURL("http://127.0.0.1/api/v10/webhooks/1/s3cr3t-token?wait=true")
    detail = describe_failure(failure, "s3cr3t-token")
    assert "s3cr3t-token" not in detail and "<token>" in detail
