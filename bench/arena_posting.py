"""Arena duel posting and voting throughput on the emulator (issue 15's benchmark).

    .venv/bin/python -m bench.arena_posting [--duels 200] [--voters 5] [--size 512] [--json]

Runs the Discord emulator and the bot (real discord.py, its delivery loop switched off so that
this script times each delivery round) in this process against its own PostgreSQL database
(``--url``, dropped and re-created). Pictures are synthetic PNGs of ``--size`` pixels, stored
once in the bot's image store.

- **duels posted + opened**: ``--duels`` ``duel_posted`` outbox rows (a pending duel with both
  images each) -> one ``deliver_pending`` -> each is posted to the channel as a message with the
  two images and the four vote buttons, stamped delivered, and opened (``db.arena.open_duel``);
  the clock stops when every duel is open.
- **baseline: generations posted + recorded**: as many ``generate_result`` rows with two images
  each through the same delivery: posted with pick buttons, stamped, recorded as a generation
  (``db.ingest.record_generation``): the same shape of work (a post with two files and buttons,
  a transaction after it).
- **votes**: ``--voters`` members click a vote button in every open duel, all clicks at once;
  the clock stops when the bot has answered every click (each a ``record_vote`` transaction);
  the rows are counted after.
- **baseline: picks**: the same members click a pick button under every posted generation
  (each a ``record_choice`` transaction).

Each measurement runs ``--repeats`` times on fresh rows, alternating duel and baseline
(ABAB...), after a small untimed warm-up; the table reports the median rate of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bench.common import Measurement, synthetic_png

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hps_bench_arena"
CHANNEL = "general"
WARMUP = 3
CLICK_TIMEOUT_S = 600.0


@dataclass
class Stack:
    """The emulator, the bot (delivery loop off), the database and two stored pictures."""

    emulator: Any
    bot: Any
    factory: sessionmaker[Session]
    images: list[dict[str, Any]]
    guild_id: int
    channel_id: int
    lora_id: int
    runner: asyncio.Task[None]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``--duels``, ``--voters``, ``--repeats``, ``--size``, ``--url``,
    ``--json``); exits with a message for a value out of range."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duels", type=int, default=200, help="duels (and generations) per round")
    parser.add_argument("--voters", type=int, default=5, help="members clicking in every duel")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each measurement")
    parser.add_argument("--size", type=int, default=512, help="side of the pictures (px)")
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL database (re-created)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    for name, low in (("duels", 1), ("voters", 1), ("repeats", 1), ("size", 8)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be at least {low}")
    return args


def _store_pictures(store: Any, size: int) -> list[dict[str, Any]]:
    """Two synthetic pictures in the image store, as a job result names them."""
    pictures = []
    for seed in range(2):
        data = synthetic_png(seed, size)
        sha = store.put(data)
        pictures.append({"sha256": sha, "seed": seed, "width": size, "height": size, "phash": ""})
    return pictures


def _register_lora(factory: sessionmaker[Session], guild_id: int) -> int:
    from db.models import ModelKind
    from db.registry import register_model_version

    with factory() as session, session.begin():
        return register_model_version(
            session,
            kind=ModelKind.lora,
            name="bench-lora",
            checkpoint_key="lora/bench",
            architecture="tiny-sd",
            guild_id=guild_id,
        ).id


async def start(args: argparse.Namespace, folder: Path) -> Stack:
    """Database re-created, emulator and bot running (delivery loop off), pictures stored."""
    from bench.ingest import recreate_database
    from bot.client import HpsBot
    from config import load_settings
    from db.engine import make_engine, make_session_factory
    from media.store import LocalImageStore
    from sandbox.emulator import DiscordEmulator

    recreate_database(args.url)
    emulator = await DiscordEmulator().start()
    settings = load_settings(
        database_url=args.url,
        storage_url=(folder / "images").as_uri(),
        hps_data_dir=folder,
        broker_url=f"sqla+sqlite:///{folder / 'broker.sqlite3'}",
        discord_token="t",
        discord_api_base=emulator.api_base,
        discord_gateway_url=emulator.gateway_url,
        allowed_cdn_hosts=f"127.0.0.1:{emulator.port}",
        allow_insecure_cdn=True,
    )
    factory = make_session_factory(make_engine(args.url))
    bot = HpsBot(settings)

    async def idle() -> None:  # this script runs the delivery rounds itself
        await asyncio.Event().wait()

    bot.delivery.run = idle  # type: ignore[method-assign]
    runner = asyncio.create_task(bot.start("t"))
    await asyncio.wait_for(bot.wait_until_ready(), 60)
    images = _store_pictures(LocalImageStore(folder / "images"), args.size)
    guild_id, channel_id = emulator.guild_id, emulator.channels[CHANNEL]
    lora_id = await asyncio.to_thread(_register_lora, factory, guild_id)
    return Stack(emulator, bot, factory, images, guild_id, channel_id, lora_id, runner)


def _queue_duels(stack: Stack, count: int, tag: str) -> list[int]:
    """``count`` pending duels with both images and their ``duel_posted`` outbox rows."""
    from db.arena import BASE, DuelImage, create_duel, set_duel_images
    from db.outbox import OutboxKind, write_outbox
    from media.store import key_for

    a, b = stack.images
    duel_ids = []
    with stack.factory() as session, session.begin():
        for index in range(count):
            duel = create_duel(
                session, guild_id=stack.guild_id, channel_id=stack.channel_id,
                prompt=f"duel {tag} {index}", generator="bench",
                configurations=(stack.lora_id, BASE), open_seconds=24 * 3600,
            )  # fmt: skip
            set_duel_images(
                session,
                duel.id,
                DuelImage(a["sha256"], key_for(a["sha256"])),
                DuelImage(b["sha256"], key_for(b["sha256"])),
            )
            payload = {"duel_id": duel.id, "prompt": duel.generator, "seed": 0}
            payload.update(image_a=a, image_b=b)
            write_outbox(
                session, OutboxKind.duel_posted, payload,
                channel_id=stack.channel_id, guild_id=stack.guild_id,
            )  # fmt: skip
            duel_ids.append(duel.id)
    return duel_ids


def _queue_generations(stack: Stack, count: int, tag: str) -> None:
    """``count`` ``generate_result`` outbox rows of two images each (no interaction: they go
    to the channel, as a result whose token expired does)."""
    from db.outbox import OutboxKind, write_outbox

    with stack.factory() as session, session.begin():
        for index in range(count):
            payload = {
                "prompt": f"generation {tag} {index}",
                "images": stack.images,
                "lora_version": None,
                "negative_prompt": None,
                "steps": 25,
            }
            write_outbox(
                session, OutboxKind.generate_result, payload,
                channel_id=stack.channel_id, guild_id=stack.guild_id,
            )  # fmt: skip


def _count(factory: sessionmaker[Session], model: Any, *conditions: Any) -> int:
    with factory() as session:
        query = select(func.count()).select_from(model).where(*conditions)
        return int(session.scalar(query) or 0)


async def _deliver(stack: Stack, expected: int) -> float:
    """One timed delivery of everything due; seconds. Fails unless ``expected`` were posted."""
    started = time.perf_counter()
    posted = await stack.bot.delivery.deliver_pending()
    seconds = time.perf_counter() - started
    if posted != expected:
        raise RuntimeError(f"delivered {posted} outbox rows, expected {expected}")
    return seconds


async def post_duels(stack: Stack, count: int, tag: str) -> Measurement:
    """Duels posted and opened per second."""
    from db.models import Duel, DuelStatus

    duel_ids = await asyncio.to_thread(_queue_duels, stack, count, tag)
    seconds = await _deliver(stack, count)
    opened = _count(stack.factory, Duel, Duel.id.in_(duel_ids), Duel.status == DuelStatus.open)
    if opened != count:
        raise RuntimeError(f"{opened} of {count} posted duels are open")
    return Measurement("duels posted + opened", count, "duels", seconds)


async def post_generations(stack: Stack, count: int, tag: str) -> Measurement:
    """Baseline: generation results posted (pick buttons) and recorded per second."""
    from db.models import Generation

    before = _count(stack.factory, Generation)
    await asyncio.to_thread(_queue_generations, stack, count, tag)
    seconds = await _deliver(stack, count)
    recorded = _count(stack.factory, Generation) - before
    if recorded != count:
        raise RuntimeError(f"{recorded} of {count} posted generations were recorded")
    return Measurement("baseline: generations posted + recorded", count, "posts", seconds)


async def _click_all(stack: Stack, clicks: list[tuple[int, dict[str, Any], str]]) -> float:
    """Every (user, message, custom_id) click at once; seconds until all are answered."""
    emulator = stack.emulator
    started = time.perf_counter()
    tokens = await asyncio.gather(*(emulator.click_button(*click) for click in clicks))
    records = [emulator.interactions[token] for token in tokens]
    deadline = time.monotonic() + CLICK_TIMEOUT_S
    while not all(record.edits for record in records):
        if time.monotonic() > deadline:
            raise TimeoutError("clicks left unanswered")
        await asyncio.sleep(0.002)
    return time.perf_counter() - started


def _messages(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    """The channel's messages whose first button's custom_id starts with ``prefix``."""
    found = []
    for message in stack.emulator.messages[stack.channel_id].values():
        rows = message.get("components") or []
        buttons = rows[0].get("components", []) if rows else []
        if buttons and str(buttons[0].get("custom_id", "")).startswith(prefix):
            found.append(message)
    return found


async def vote(stack: Stack, voters: list[int], duel_ids: set[int]) -> Measurement:
    """Votes per second: every voter clicks A, B or tie in each of ``duel_ids``."""
    from db.models import DuelVote
    from sandbox.community import duel_id_of

    messages = [m for m in _messages(stack, "hps:duel:") if duel_id_of(m) in duel_ids]
    kinds = ("a", "b", "tie")
    clicks = [
        (user, m, f"hps:duel:{duel_id_of(m)}:{kinds[(i + j) % 3]}")
        for i, m in enumerate(messages)
        for j, user in enumerate(voters)
    ]
    seconds = await _click_all(stack, clicks)
    counted = _count(stack.factory, DuelVote, DuelVote.duel_id.in_(duel_ids))
    if counted != len(clicks):
        raise RuntimeError(f"{counted} of {len(clicks)} duel votes recorded")
    return Measurement("votes (click -> record_vote -> answer)", len(clicks), "votes", seconds)


async def pick(stack: Stack, voters: list[int], messages: list[dict[str, Any]]) -> Measurement:
    """Baseline: picks per second: every voter clicks a pick button under each generation."""
    from db.models import Choice

    before = _count(stack.factory, Choice)
    clicks = [
        (user, m, f"hps:pick:{(i + j) % 2}")
        for i, m in enumerate(messages)
        for j, user in enumerate(voters)
    ]
    seconds = await _click_all(stack, clicks)
    counted = _count(stack.factory, Choice) - before
    if counted != len(clicks):
        raise RuntimeError(f"{counted} of {len(clicks)} picks recorded")
    return Measurement("baseline: picks (click -> record_choice)", len(clicks), "picks", seconds)


async def _round(stack: Stack, args: argparse.Namespace, tag: str) -> list[Measurement]:
    """One round of the four measurements on fresh rows and fresh voters."""
    voters = [stack.emulator.add_user(f"voter-{tag}-{n}") for n in range(args.voters)]
    known = set(stack.emulator.messages[stack.channel_id])
    duels = await post_duels(stack, args.duels, tag)
    generations = await post_generations(stack, args.duels, tag)
    fresh = [m for k, m in stack.emulator.messages[stack.channel_id].items() if k not in known]
    duel_ids = {int(duel_id) for m in fresh if (duel_id := _duel_id(m)) is not None}
    votes = await vote(stack, voters, duel_ids)
    picks = await pick(stack, voters, [m for m in fresh if _duel_id(m) is None])
    return [duels, generations, votes, picks]


def _duel_id(message: dict[str, Any]) -> int | None:
    from sandbox.community import duel_id_of

    return duel_id_of(message)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then ``--repeats`` rounds; the median rate of each measurement."""
    with tempfile.TemporaryDirectory(prefix="hps-bench-arena-") as folder:
        stack = await start(args, Path(folder))
        try:
            warm = argparse.Namespace(**{**vars(args), "duels": WARMUP, "voters": 1})
            await _round(stack, warm, "warmup")
            rounds = [await _round(stack, args, f"r{n}") for n in range(args.repeats)]
        finally:
            await stack.bot.close()
            await asyncio.wait_for(stack.runner, 30)
            await stack.emulator.stop()
    result: dict[str, Any] = {
        "duels": args.duels,
        "voters": args.voters,
        "repeats": args.repeats,
        "size": args.size,
    }
    for position, key in enumerate(("duels", "generations", "votes", "picks")):
        rates = [measurements[position].per_second for measurements in rounds]
        first = rounds[0][position]
        result[f"{key}_per_s"] = statistics.median(rates)
        result[f"{key}_rates"] = rates
        result[f"{key}_label"] = first.name
        result[f"{key}_units"] = first.units
    result["duel_to_baseline_posting"] = result["duels_per_s"] / result["generations_per_s"]
    result["vote_to_pick"] = result["votes_per_s"] / result["picks_per_s"]
    return result


def print_table(result: dict[str, Any]) -> None:
    """The result as a table (median of the rounds)."""
    print(
        f"arena posting on the emulator: {result['duels']} duels per round, "
        f"{result['voters']} voters, {result['size']} px pictures, "
        f"median of {result['repeats']} rounds (bot + emulator in one process)"
    )
    print(f"{'measurement':<44} {'per round':>10} {'rate/s':>9}")
    for key, unit in (("duels", "duels"), ("generations", "posts"), ("votes", "votes"),
                      ("picks", "picks")):  # fmt: skip
        label = result[f"{key}_label"]
        print(f"{label:<44} {result[f'{key}_units']:>6} {unit:<3} {result[f'{key}_per_s']:>9.1f}")
    print(
        f"duel posting / baseline posting: {result['duel_to_baseline_posting']:.2f}x; "
        f"votes / picks: {result['vote_to_pick']:.2f}x"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print the table (or JSON); return the result."""
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
