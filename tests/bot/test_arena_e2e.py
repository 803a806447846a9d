"""Issue 15's duel in chat, end to end: ``/hps arena`` -> worker (tiny SD, the guild's LoRA
against the base generator, one seed) -> outbox -> the bot posts A.png and B.png with vote
buttons -> clicks (a changed vote, a duplicate, a bot, an opted-out user) -> the vote that
makes ``max_votes`` closes it -> the message is edited once to reveal the sides and tally."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sandbox.emulator import DiscordEmulator
from tests.arena_factories import tiny_sd_lora
from tests.bot.helpers import delivered_outbox, eventually


def _arena(prompt: str, votes: int) -> list[dict[str, Any]]:
    options = [
        {"name": "prompt", "type": 3, "value": prompt},
        {"name": "votes", "type": 4, "value": votes},
    ]
    return [{"name": "arena", "type": 1, "options": options}]


async def _answer(emulator: DiscordEmulator, token: str) -> str:
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.edits), 20)
    return record.edits[-1]


async def test_a_guild_without_a_lora_is_told_privately(live: dict[str, Any]) -> None:
    emulator: DiscordEmulator = live["emulator"]
    token = await emulator.inject_slash_command(
        emulator.add_user("alice"), "general", "hps", _arena("a fox", 3)
    )
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.followups), 20)
    assert record.followups[0]["flags"] & 64
    assert "nothing to compare" in record.followups[0]["content"]


async def test_duel_votes_close_and_reveal_once(
    live: dict[str, Any], pg_factory: Any, tmp_path: Path
) -> None:
    from db.models import Duel, DuelStatus, DuelVote
    from db.privacy import opt_out

    emulator: DiscordEmulator = live["emulator"]
    lora_id = tiny_sd_lora(
        pg_factory, tmp_path / "models", emulator.guild_id, "community-lora",
        folder="duel-test", activate=True,
    )  # fmt: skip
    alice, bob, carol = (emulator.add_user(n) for n in ("alice", "bob", "carol"))
    mallory, robot = emulator.add_user("mallory"), emulator.add_user("robot", bot=True)
    with pg_factory() as session, session.begin():
        opt_out(session, mallory)

    token = await emulator.inject_slash_command(
        alice, "general", "hps", _arena("a <@&1> @everyone fox", 3)
    )
    channel = emulator.messages[emulator.channels["general"]]

    def duel_message() -> dict[str, Any] | None:
        found = [m for m in channel.values() if m.get("components")]
        return found[0] if found else None

    await eventually(lambda: duel_message() is not None, 120)
    # What voters' clients show: a copy (the reveal's edit changes the emulator's own).
    posted = copy.deepcopy(duel_message())
    assert posted is not None and not emulator.interactions[token].public_followups
    assert [a["filename"] for a in posted["attachments"]] == ["A.png", "B.png"]
    assert "community-lora" not in posted["content"] and "@everyone" not in posted["content"]
    [post] = [p for p in emulator.posts if p.message["id"] == posted["id"]]
    assert not post.pings.users and not post.pings.everyone and not post.pings.roles
    buttons = posted["components"][0]["components"]
    with pg_factory() as session:
        duel = session.scalars(select(Duel)).one()
        duel_id = duel.id
        assert {duel.version_a_id, duel.version_b_id} == {lora_id, None}
        lora_side = "A" if duel.version_a_id == lora_id else "B"
    assert [b["custom_id"] for b in buttons] == [
        f"hps:duel:{duel_id}:{vote}" for vote in ("a", "b", "tie", "both_bad")
    ]
    await eventually(lambda: _status(pg_factory, duel_id) == DuelStatus.open, 20)

    async def click(user: int, vote: str) -> str:
        return await _answer(
            emulator, await emulator.click_button(user, posted, f"hps:duel:{duel_id}:{vote}")
        )

    assert (await click(alice, "a")).startswith("Vote recorded: A")
    assert (await click(alice, "b")) == "Vote changed to B."
    assert (await click(alice, "b")) == "Already counted: B."
    assert (await click(robot, "a")) == "Bots' votes are not counted."
    assert (await click(mallory, "a")).startswith("You opted out")
    assert (await click(bob, "tie")).startswith("Vote recorded: tie")
    with pg_factory() as session:
        assert len(session.scalars(select(DuelVote)).all()) == 2
    assert (await click(carol, "b")).startswith("Vote recorded: B")  # the 3rd closes it
    assert _status(pg_factory, duel_id) == DuelStatus.closed
    # A client that still shows the buttons: the click is answered, not counted.
    assert (await click(bob, "a")) == "This duel is closed; votes are no longer taken."

    await eventually(lambda: not channel[int(posted["id"])]["components"], 30)
    revealed = channel[int(posted["id"])]["content"]
    other = "B" if lora_side == "A" else "A"
    assert f"{lora_side} was **community-lora (#{lora_id})**" in revealed
    assert f"{other} was **base**" in revealed
    assert "(3 votes)" in revealed and "A 0 · B 2 · tie 1 · both bad 0" in revealed
    assert len(emulator.calls_to("PATCH", f"/messages/{posted['id']}")) == 1
    assert len(await delivered_outbox(pg_factory, "duel_reveal")) == 1


def _status(factory: Any, duel_id: int) -> Any:
    from db.models import Duel

    with factory() as session:
        duel = session.get(Duel, duel_id)
        return None if duel is None else duel.status
