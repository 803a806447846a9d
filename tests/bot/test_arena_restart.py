"""Issue 15's duels across a bot restart and the time-based close, on the emulator with real
discord.py and PostgreSQL (no worker: the test stores the two images and writes the
``duel_posted`` outbox row a duel job writes, so the bot's own delivery posts the duel).

- A duel is posted, the bot client is stopped and a NEW client is started against the same
  emulator and database; members click the buttons of the OLD message: the vote counts, the
  same vote twice counts once, a changed vote replaces the earlier one, a bot's click and an
  opted-out member's click are refused; every answer is private (an ephemeral deferral) and
  nothing is posted in the channel.
- The duel's deadline passes (``closes_at`` moved into the past in the database, no long
  sleep): the delivery loop's sweep closes it within a few poll intervals and the message is
  edited exactly once to reveal the sides with the tally; a click after that is answered
  with the closed answer and not counted, and later rounds edit nothing.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.client import HpsBot
from sandbox.emulator import DiscordEmulator
from tests.arena_factories import make_duel, register_lora
from tests.bot.conftest import bot_settings
from tests.bot.helpers import eventually
from tests.factories import solid_png

POLL_S = 0.2  # the delivery loop's timed rounds (5 s in production)
EPHEMERAL = 64
CHANNEL = "general"


class Stack:
    """The emulator and the currently running bot client (replaced by :meth:`restart`)."""

    def __init__(self, emulator: DiscordEmulator, settings: Any) -> None:
        self.emulator = emulator
        self.settings = settings
        self.bot: HpsBot | None = None
        self.runner: asyncio.Task[None] | None = None

    async def start(self) -> HpsBot:
        """A new bot client, connected and ready."""
        bot = HpsBot(self.settings)
        self.bot, self.runner = bot, asyncio.create_task(bot.start("t"))
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        return bot

    async def stop(self) -> None:
        """Close the running client and wait for it to end."""
        if self.bot is not None and self.runner is not None:
            await self.bot.close()
            await asyncio.wait_for(self.runner, 10)
        self.bot = self.runner = None

    async def restart(self) -> HpsBot:
        """Stop the client and start a new one (a bot process restart)."""
        old = self.bot
        await self.stop()
        bot = await self.start()
        assert bot is not old
        return bot


@pytest.fixture
async def stack(
    pg_url: str,
    pg_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Stack]:
    monkeypatch.setattr("bot.delivery.POLL_INTERVAL_S", POLL_S)
    emulator = await DiscordEmulator().start()
    running = Stack(emulator, bot_settings(emulator, pg_url, tmp_path))
    try:
        await running.start()
        yield running
    finally:
        await running.stop()
        await emulator.stop()


def _queue_posted_duel(
    factory: sessionmaker[Session], stack: Stack, requester: int, prompt: str
) -> tuple[int, int]:
    """A LoRA-vs-base duel with stored images and the outbox row that posts it, as the duel
    job leaves them; (duel id, LoRA version id)."""
    from db.arena import DuelImage, set_duel_images
    from db.outbox import OutboxKind, write_outbox
    from jobqueue.contracts import DuelResult, GeneratedImage
    from media.store import LocalImageStore, key_for

    store = LocalImageStore(Path(stack.settings.hps_data_dir) / "images")
    shas = [store.put(solid_png(color)) for color in ((200, 30, 30), (30, 30, 200))]
    guild_id, channel_id = stack.emulator.guild_id, stack.emulator.channels[CHANNEL]
    with factory() as session, session.begin():
        lora = register_lora(
            session,
            "restart-lora",
            guild_id=guild_id,
            checkpoint_key="lora/restart",
            architecture="tiny-sd",
        )
        duel = make_duel(  # pending: the bot's delivery of the outbox row posts and opens it
            session,
            guild_id=guild_id,
            configurations=(lora, None),
            opened_at=None,
            prompt=prompt,
            channel_id=channel_id,
            generator="hps-sd",
            open_seconds=3600,
            requested_by=requester,
        )
        set_duel_images(session, duel.id, *(DuelImage(sha, key_for(sha)) for sha in shas))
        images = [GeneratedImage(sha256=sha, seed=1, width=32, height=32) for sha in shas]
        result = DuelResult(
            duel_id=duel.id, prompt=prompt, seed=1, image_a=images[0], image_b=images[1]
        )
        write_outbox(
            session,
            OutboxKind.duel_posted,
            result.model_dump(mode="json"),
            channel_id=channel_id,
            guild_id=guild_id,
            dedupe_key=f"test-duel:{duel.id}",
        )
        return duel.id, lora


async def _posted_duel(
    stack: Stack, factory: sessionmaker[Session], duel_id: int
) -> dict[str, Any]:
    """The duel's message once posted and the duel open: a copy, as a member's client keeps
    showing it (the reveal's edit changes the emulator's own)."""
    channel = stack.emulator.messages[stack.emulator.channels[CHANNEL]]

    def found() -> list[dict[str, Any]]:
        return [m for m in channel.values() if m.get("components")]

    await eventually(lambda: bool(found()), 30)
    await eventually(lambda: _duel(factory, duel_id).status.value == "open", 20)
    [message] = found()
    assert [a["filename"] for a in message["attachments"]] == ["A.png", "B.png"]
    return copy.deepcopy(message)


def _duel(factory: sessionmaker[Session], duel_id: int) -> Any:
    from db.models import Duel

    with factory() as session:
        duel = session.get(Duel, duel_id)
        assert duel is not None
        return duel


def _votes(factory: sessionmaker[Session], duel_id: int) -> dict[int, str]:
    from db.models import DuelVote

    with factory() as session:
        rows = session.scalars(select(DuelVote).where(DuelVote.duel_id == duel_id)).all()
        return {row.user_id: row.vote.value for row in rows}


async def _click(stack: Stack, message: dict[str, Any], user: int, custom_id: str) -> str:
    """A member clicks; the answer they see. Asserts it was private: an ephemeral deferral,
    nothing posted in the channel."""
    emulator = stack.emulator
    channel = emulator.messages[emulator.channels[CHANNEL]]
    before = len(channel)
    token = await emulator.click_button(user, message, custom_id)
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.edits), 20)
    assert record.callbacks == [5] and record.deferred_flags & EPHEMERAL
    assert not record.public_followups and len(channel) == before
    return record.edits[-1]


async def test_old_buttons_count_votes_after_a_restart(
    stack: Stack, pg_factory: sessionmaker[Session]
) -> None:
    from db.privacy import opt_out

    emulator = stack.emulator
    alice, bob, carol = (emulator.add_user(name) for name in ("alice", "bob", "carol"))
    mallory, robot = emulator.add_user("mallory"), emulator.add_user("robot", bot=True)
    with pg_factory() as session, session.begin():
        opt_out(session, mallory)
    duel_id, _ = _queue_posted_duel(pg_factory, stack, alice, "a fox in the snow")
    message = await _posted_duel(stack, pg_factory, duel_id)
    first_client = stack.bot

    second_client = await stack.restart()
    assert second_client is not first_client and second_client.is_ready()
    button = f"hps:duel:{duel_id}:" + "{}"
    assert (await _click(stack, message, bob, button.format("a"))).startswith("Vote recorded: A")
    assert await _click(stack, message, bob, button.format("a")) == "Already counted: A."
    assert _votes(pg_factory, duel_id) == {bob: "a"}
    assert await _click(stack, message, bob, button.format("b")) == "Vote changed to B."
    assert (await _click(stack, message, carol, button.format("tie"))).startswith(
        "Vote recorded: tie"
    )
    assert await _click(stack, message, robot, button.format("a")) == (
        "Bots' votes are not counted."
    )
    assert (await _click(stack, message, mallory, button.format("a"))).startswith("You opted out")
    assert _votes(pg_factory, duel_id) == {bob: "b", carol: "tie"}
    assert _duel(pg_factory, duel_id).status.value == "open"


async def test_a_due_duel_is_revealed_by_the_sweep_exactly_once(
    stack: Stack, pg_factory: sessionmaker[Session]
) -> None:
    from bot.arena import sweep_due_duels
    from db.models import Duel, OutboxMessage, utcnow

    emulator = stack.emulator
    alice, bob, carol, dave = (emulator.add_user(n) for n in ("alice", "bob", "carol", "dave"))
    duel_id, lora = _queue_posted_duel(pg_factory, stack, alice, "a lighthouse @everyone")
    message = await _posted_duel(stack, pg_factory, duel_id)
    button = f"hps:duel:{duel_id}:" + "{}"
    for user, vote in ((bob, "a"), (carol, "b"), (dave, "both_bad")):
        assert (await _click(stack, message, user, button.format(vote))).startswith("Vote recorded")

    # The deadline passes (moved in the database rather than waited for).
    with pg_factory() as session, session.begin():
        session.execute(
            update(Duel).where(Duel.id == duel_id).values(closes_at=utcnow() - timedelta(seconds=1))
        )
    channel = emulator.messages[emulator.channels[CHANNEL]]
    await eventually(lambda: not channel[int(message["id"])]["components"], 10 + 20 * POLL_S)
    duel = _duel(pg_factory, duel_id)
    assert duel.status.value == "closed" and duel.close_reason == "time"
    revealed = channel[int(message["id"])]["content"]
    lora_side, base_side = ("A", "B") if duel.version_a_id == lora else ("B", "A")
    assert f"{lora_side} was **restart-lora (#{lora})**" in revealed
    assert f"{base_side} was **base**" in revealed
    assert "(3 votes)" in revealed and "A 1 · B 1 · tie 0 · both bad 1" in revealed
    [post] = [p for p in emulator.posts if p.message["id"] == message["id"]]
    assert not post.pings.everyone and not post.pings.users and not post.pings.roles

    # No further votes: a client still showing the buttons gets the closed answer.
    assert await _click(stack, message, bob, button.format("b")) == (
        "This duel is closed; votes are no longer taken."
    )
    assert await _click(stack, message, alice, button.format("a")) == (
        "This duel is closed; votes are no longer taken."
    )
    assert _votes(pg_factory, duel_id) == {bob: "a", carol: "b", dave: "both_bad"}

    # Edited exactly once: another sweep closes nothing, another round posts nothing.
    with pg_factory() as session, session.begin():
        assert sweep_due_duels(session) == 0
    assert stack.bot is not None
    await stack.bot.delivery.deliver_pending()
    assert len(emulator.calls_to("PATCH", f"/messages/{message['id']}")) == 1
    with pg_factory() as session:
        reveals = session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "duel_reveal")
        ).all()
    assert len(reveals) == 1 and reveals[0].delivered_at is not None
