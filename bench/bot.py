"""Harvest throughput and latency through the gateway, and interaction acknowledgement latency.

    .venv/bin/python -m bench.bot [--generations 200] [--rate 20] [--json]

Runs the Discord emulator and the bot (real discord.py) in this process against the
``hps_bench`` PostgreSQL database. A generator bot posts messages with 4 PNG attachments of
512x512 in a harvested channel:
- burst: all at once -> generations/s until the last row is committed;
- paced: at ``--rate`` per second -> p50 / p99 from the gateway event to the committed row;
- acks: 50 concurrent ``/hps score`` commands -> p50 / p99 from the interaction to its defer.
Targets (issue 6): burst >= 40/s, paced p99 <= 200 ms at 20/s, ack p99 <= 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import synthetic_png
from bench.ingest import DEFAULT_URL, recreate_database
from bot.client import HpsBot
from config import load_settings
from db.channels import enable_channel
from db.engine import make_engine, make_session_factory
from sandbox.emulator import DiscordEmulator


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    recreate_database(DEFAULT_URL)
    emulator = await DiscordEmulator().start()
    folder = Path(tempfile.mkdtemp(prefix="hps-bench-bot-"))
    settings = load_settings(
        database_url=DEFAULT_URL,
        storage_url=(folder / "images").as_uri(),
        hps_data_dir=folder,
        broker_url=f"sqla+sqlite:///{folder / 'broker.sqlite3'}",
        discord_token="t",
        discord_api_base=emulator.api_base,
        discord_gateway_url=emulator.gateway_url,
        allowed_cdn_hosts=f"127.0.0.1:{emulator.port}",
        allow_insecure_cdn=True,
    )
    factory = make_session_factory(make_engine(DEFAULT_URL))
    with factory() as session, session.begin():
        enable_channel(
            session, emulator.guild_id, emulator.channels["generations"], "multi_attachment"
        )
    bot = HpsBot(settings)
    runner = asyncio.create_task(bot.start("t"))
    await asyncio.wait_for(bot.wait_until_ready(), 30)

    committed: dict[int, float] = {}
    harvester = bot.get_cog("HarvestCog").harvester  # type: ignore[union-attr]
    original = harvester.generation

    async def timed_generation(parsed: Any, **kwargs: Any) -> Any:
        outcome = await original(parsed, **kwargs)
        committed[kwargs["message_id"]] = time.perf_counter()
        return outcome

    harvester.generation = timed_generation
    generator = emulator.add_user("ImageGen", bot=True)
    pngs = [synthetic_png(seed) for seed in range(4 * 16)]

    async def post(index: int) -> tuple[int, float]:
        files = [(f"{k}.png", pngs[(index * 4 + k) % len(pngs)], "image/png") for k in range(4)]
        users = [emulator.add_user(f"user{index}")]
        started = time.perf_counter()
        message = await emulator.inject_message(
            "generations", generator, f"**prompt {index}** <@{users[0]}>", files
        )
        return int(message["id"]), started

    async def wait_for(ids: list[int]) -> None:
        while not all(i in committed for i in ids):
            await asyncio.sleep(0.005)

    # Burst.
    start = time.perf_counter()
    burst = [await post(i) for i in range(args.generations)]
    await asyncio.wait_for(wait_for([i for i, _ in burst]), 600)
    burst_rate = args.generations / (time.perf_counter() - start)

    # Paced.
    paced = []
    for i in range(args.generations, args.generations + args.paced):
        paced.append(await post(i))
        await asyncio.sleep(1 / args.rate)
    await asyncio.wait_for(wait_for([i for i, _ in paced]), 600)
    latencies = [(committed[i] - t0) * 1000 for i, t0 in paced]

    # Interaction acknowledgements under 50 concurrent /hps score.
    options = [
        {
            "name": "score",
            "type": 1,
            "options": [
                {"name": "image", "type": 11, "value": 0},
                {"name": "prompt", "type": 3, "value": "x"},
            ],
        }
    ]
    users = [emulator.add_user(f"scorer{n}") for n in range(50)]
    tokens = await asyncio.gather(
        *(
            emulator.inject_slash_command(
                u, "general", "hps", options, attachments=[("a.png", pngs[0], "image/png")]
            )
            for u in users
        )
    )
    records = [emulator.interactions[t] for t in tokens]
    while not all(r.acknowledged_at for r in records):
        await asyncio.sleep(0.005)
    acks = [((r.acknowledged_at or 0) - r.created_at) * 1000 for r in records]
    await asyncio.sleep(3)  # let the commands finish their downloads and submissions

    await bot.close()
    await asyncio.wait_for(runner, 10)
    await emulator.stop()
    return {
        "generations_burst": args.generations,
        "burst_generations_per_s": burst_rate,
        "paced_rate_per_s": args.rate,
        "paced_p50_ms": statistics.median(latencies),
        "paced_p99_ms": percentile(latencies, 0.99),
        "ack_p50_ms": statistics.median(acks),
        "ack_p99_ms": percentile(acks, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="bot harvest and interaction latency")
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--paced", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        "harvest through the gateway, 4 x 512 px PNG per generation (bot + emulator in one process)"
    )
    print(f"burst: {result['burst_generations_per_s']:.1f} generations/s (target >= 40)")
    p50, p99 = result["paced_p50_ms"], result["paced_p99_ms"]
    print(
        f"paced at {args.rate:g}/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms event -> committed row "
        "(target p99 <= 200 ms)"
    )
    a50, a99 = result["ack_p50_ms"], result["ack_p99_ms"]
    print(
        f"50 concurrent /hps score: ack p50 {a50:.0f} ms, p99 {a99:.0f} ms (target p99 <= 250 ms)"
    )


if __name__ == "__main__":
    main()
