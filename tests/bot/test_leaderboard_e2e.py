"""Issue 15's leaderboard in chat, end to end: duels with votes in two guilds (through
``db.arena``) -> ``/hps leaderboard`` -> the worker's ``leaderboard`` job (Bradley–Terry with
Davidson ties, bootstrap intervals) -> outbox -> the bot posts one message with the PNG chart
and the table, in rating order, with model names that cannot format or ping. Each guild sees
only its own duels; a guild without duels reads a sentence; the job's stored JSON is what
``hps leaderboard`` prints for the same data."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import discord
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from sandbox.emulator import DiscordEmulator, InteractionRecord
from tests.arena_factories import make_duel, register_lora
from tests.bot.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROUNDS = 200
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_DUELS = "No leaderboard yet: no arena duel of this server has closed"
B_CHANNEL = "b-lab"
UNSAFE_NAME = "@everyone *top*"  # a guild's own name for its LoRA: must neither ping nor format


def _loras(factory: sessionmaker[Session], guild_id: int, names: tuple[str, ...]) -> dict[str, int]:
    with factory() as session, session.begin():
        return {
            name: register_lora(
                session,
                name,
                guild_id=guild_id,
                checkpoint_key=f"lora/{guild_id}/{n}",
                architecture="tiny-sd",
            )
            for n, name in enumerate(names)
        }


def _play(
    factory: sessionmaker[Session],
    guild_id: int,
    channel_id: int,
    matches: list[tuple[int | None, int | None, int]],
) -> None:
    """One closed duel per match ``(first, second, first_wins)``: eight voters, of whom
    ``first_wins`` prefer ``first``, the rest ``second``, and one both-bad vote."""
    from db.arena import close_duel, record_vote

    for first, second, first_wins in matches:
        with factory() as session, session.begin():
            duel = make_duel(
                session,
                guild_id=guild_id,
                configurations=(first, second),
                opened_at=T0,
                prompt="a red circle",
                channel_id=channel_id,
            )
            first_side = "a" if duel.version_a_id == first else "b"
            second_side = "b" if first_side == "a" else "a"
            for user in range(1, 9):
                vote = first_side if user <= first_wins else second_side
                record_vote(session, duel.id, user, vote, now=T0 + timedelta(seconds=user))
            record_vote(session, duel.id, 99, "both_bad", now=T0 + timedelta(seconds=9))
            close_duel(session, duel.id, now=T0 + timedelta(seconds=10))


def _leaderboard_options(rounds: int) -> list[dict[str, Any]]:
    return [{"name": "leaderboard", "type": 1, "options": [{"name": "rounds", "type": 4,
                                                            "value": rounds}]}]  # fmt: skip


async def _leaderboard(emulator: DiscordEmulator, user: int, channel: str) -> InteractionRecord:
    """``user`` runs ``/hps leaderboard`` in ``channel``; the record once its result is in."""
    token = await emulator.inject_slash_command(user, channel, "hps", _leaderboard_options(ROUNDS))
    record = emulator.interactions[token]
    await eventually(lambda: bool(record.public_followups), 120)
    return record


def _job_result(factory: sessionmaker[Session], token: str) -> dict[str, Any]:
    from db.models import Job, JobStatus

    with factory() as session:
        [job] = session.scalars(select(Job).where(Job.interaction_token == token)).all()
        assert job.kind == "leaderboard" and job.status == JobStatus.succeeded, job.error
        assert job.result is not None
        return dict(job.result)


def _chart(emulator: DiscordEmulator, message: dict[str, Any]) -> bytes:
    [attachment] = message["attachments"]
    assert attachment["filename"] == "leaderboard.png"
    key = attachment["url"].split("/cdn/attachments/", 1)[1].split("/", 1)[0]
    data = emulator.files[key][0]
    assert data.startswith(PNG_SIGNATURE)
    Image.open(io.BytesIO(data)).verify()  # a whole, valid PNG
    return data


def _table_rows(content: str) -> list[str]:
    """The rows of the code block's table (the header and the closing fence left out)."""
    block = content.split("```", 2)[1]
    return [line for line in block.splitlines()[2:] if line.strip()]


def _cli_leaderboard(pg_url: str, data: Path, guild_id: int) -> dict[str, Any]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HPS_")}
    environment.update(DATABASE_URL=pg_url, HPS_DATA_DIR=str(data), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "leaderboard", "--guild", str(guild_id),
         "--rounds", str(ROUNDS)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_leaderboard_posts_its_guilds_ratings_as_a_chart_and_a_safe_table(
    live: dict[str, Any], pg_factory: sessionmaker[Session], pg_url: str, tmp_path: Path
) -> None:
    emulator: DiscordEmulator = live["emulator"]
    bot = live["bot"]
    a_id = emulator.guild_id
    b_id = await emulator.add_guild("Guild B", (B_CHANNEL,))
    await eventually(lambda: bot.get_guild(b_id) is not None)
    alice, bob = emulator.add_user("alice"), emulator.add_user("bob")

    # No duels yet: a sentence, no chart.
    empty = await _leaderboard(emulator, alice, "general")
    [message] = empty.public_followups
    assert NO_DUELS in message["content"] and not message["attachments"]
    assert _job_result(pg_factory, empty.token)["leaderboard"] is None

    a = _loras(pg_factory, a_id, (UNSAFE_NAME, "disliked"))
    b = _loras(pg_factory, b_id, ("b-secret-lora",))
    liked, disliked = a[UNSAFE_NAME], a["disliked"]
    _play(pg_factory, a_id, emulator.channels["general"], [(liked, None, 6)] * 6
          + [(None, disliked, 6)] * 6 + [(liked, disliked, 7)] * 4)  # fmt: skip
    # B's model loses every vote against the base generator: A's board must not show it.
    _play(pg_factory, b_id, emulator.channels[B_CHANNEL], [(b["b-secret-lora"], None, 0)] * 3)

    record = await _leaderboard(emulator, alice, "general")
    [message] = record.public_followups
    _chart(emulator, message)
    content = message["content"]
    rows = _table_rows(content)
    shown = discord.utils.escape_mentions(f"{UNSAFE_NAME} (#{liked})")
    expected = [shown, "base", f"disliked (#{disliked})"]
    assert len(rows) == len(expected), rows
    for row, name in zip(rows, expected, strict=True):
        assert row.split(maxsplit=1)[1].startswith(name), (row, name)
    assert "b-secret" not in content
    assert "@everyone" not in content and "*top*" in content.split("```")[1]  # in the block
    assert len(content) <= 2000 and "16 both-bad votes counted, not rated." in content
    [post] = [p for p in emulator.posts if p.message["id"] == message["id"]]
    assert not post.pings.everyone and not post.pings.roles and post.pings.users in ([], [alice])

    # The job stored what `hps leaderboard` prints for the same data.
    stored = _job_result(pg_factory, record.token)
    board = stored["leaderboard"]
    assert board["guild"] == a_id and board["votes"] == 16 * 8 and board["both_bad_votes"] == 16
    assert [model["name"] for model in board["models"]] == [
        f"{UNSAFE_NAME} (#{liked})",
        "base",
        f"disliked (#{disliked})",
    ]
    assert board == _cli_leaderboard(pg_url, tmp_path, a_id)

    # B's leaderboard: its own duels only.
    b_record = await _leaderboard(emulator, bob, B_CHANNEL)
    [b_message] = b_record.public_followups
    _chart(emulator, b_message)
    b_rows = _table_rows(b_message["content"])
    assert [row.split(maxsplit=1)[1].split(" (#")[0].split()[0] for row in b_rows] == [
        "base", "b-secret-lora"
    ]  # fmt: skip
    assert "disliked" not in b_message["content"] and "*top*" not in b_message["content"]
    b_board = _job_result(pg_factory, b_record.token)["leaderboard"]
    assert b_board["votes"] == 3 * 8 and b_board["guild"] == b_id


async def test_leaderboard_jobs_count_against_the_users_limits(
    bot_alone: tuple[DiscordEmulator, Any], pg_factory: sessionmaker[Session]
) -> None:
    """No worker here: the first job stays open, so a second one is over the limit of one."""
    from db.models import Job
    from tests.bot.helpers import count
    from tests.worker.harness import flush_broker

    flush_broker()
    emulator, bot = bot_alone
    bot.settings.user_max_open_jobs = 1
    carol = emulator.add_user("carol")
    first = emulator.interactions[
        await emulator.inject_slash_command(carol, "general", "hps", _leaderboard_options(0))
    ]
    await eventually(lambda: bool(first.followups), 20)
    assert first.followups[0]["content"] == "Rating the models: queued"
    again = emulator.interactions[
        await emulator.inject_slash_command(carol, "general", "hps", _leaderboard_options(0))
    ]
    await eventually(lambda: bool(again.followups), 20)
    refusal = again.followups[0]
    assert refusal["flags"] & 64 and refusal["content"].startswith(
        "Sorry: you already have 1 jobs waiting or running"
    )
    assert count(pg_factory, Job) == 1
    flush_broker()
