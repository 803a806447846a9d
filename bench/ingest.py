"""Ingest throughput into PostgreSQL: db/ operations vs bare psycopg vs full image intake.

    .venv/bin/python -m bench.ingest [--generations 2000] [--intake-generations 200] [--json]

(a) ``db.ingest.record_generation``, one transaction per generation as the bot does it
    (user, prompt, generation, 4 image rows);
(b) a bare psycopg baseline writing the same rows with hand-written SQL, one transaction each;
(c) the full intake: 4 PNGs of 512x512 per generation decoded, verified, re-encoded, hashed
    (sha256 + perceptual hash) and stored by a pool of worker processes (one per core), rows
    written by (a) in the parent.

Uses its own database (``hps_bench`` next to the test database), recreated on every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import psycopg
from sqlalchemy.engine import make_url

from bench.common import Measurement, synthetic_png
from db.engine import make_engine, make_session_factory, run_transaction
from db.ingest import GenerationIn, ImageIn, record_generation
from db.prompts import prompt_hash
from media.intake import intake_and_store
from media.store import LocalImageStore, key_for
from migrations.runner import upgrade

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hps_bench"
MAX_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000
MESSAGE_ID_BASE = 1_200_000_000_000_000_000


def recreate_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{parsed.database}"')
    upgrade(url)


def fake_image_rows(index: int) -> list[ImageIn]:
    rows = []
    for position in range(4):
        sha = hashlib.sha256(f"{index}:{position}".encode()).hexdigest()
        rows.append(ImageIn(sha, key_for(sha), 512, 512, "8f3a0c1b2d4e6f70", seed=position))
    return rows


def generation_for(index: int, images: list[ImageIn]) -> GenerationIn:
    return GenerationIn(
        source_message_id=MESSAGE_ID_BASE + index,
        channel_id=900,
        guild_id=800,
        prompt=f"benchmark prompt number {index}, a castle at dusk, highly detailed",
        generator="bench",
        images=images,
        requester_id=10_000 + index % 50,
        params={"steps": 25, "cfg": 7.5},
    )


def bench_db_operations(url: str, count: int, offset: int) -> Measurement:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    generations = [generation_for(offset + i, fake_image_rows(offset + i)) for i in range(count)]
    start = time.perf_counter()
    for generation in generations:
        run_transaction(factory, partial(record_generation, generation=generation))
    elapsed = time.perf_counter() - start
    engine.dispose()
    return Measurement("(a) db/ operations (SQLAlchemy)", count, "generations", elapsed)


BARE_SQL_USER = """
INSERT INTO discord_users (id, opted_out, created_at) VALUES (%s, false, now())
ON CONFLICT (id) DO UPDATE SET id = excluded.id RETURNING opted_out
"""
BARE_SQL_PROMPT = """
INSERT INTO prompts (text, normalized_hash, created_at) VALUES (%s, %s, now())
ON CONFLICT (normalized_hash) DO UPDATE SET normalized_hash = excluded.normalized_hash
RETURNING id
"""
BARE_SQL_GENERATION = """
INSERT INTO generations (source_message_id, guild_id, channel_id, prompt_id, requester_id,
                         generator, params, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (source_message_id) DO UPDATE SET source_message_id = excluded.source_message_id
RETURNING id
"""
BARE_SQL_IMAGES = """
INSERT INTO images (generation_id, position, sha256, storage_key, width, height, phash, seed,
                    created_at)
VALUES {values}
ON CONFLICT (generation_id, position) DO NOTHING
"""


def bench_bare_psycopg(url: str, count: int, offset: int) -> Measurement:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    generations = [generation_for(offset + i, fake_image_rows(offset + i)) for i in range(count)]
    images_sql = BARE_SQL_IMAGES.format(
        values=", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, now())"] * 4)
    )
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        for g in generations:
            with conn.transaction():
                conn.execute(BARE_SQL_USER, (g.requester_id,))
                prompt_id = conn.execute(
                    BARE_SQL_PROMPT, (g.prompt, prompt_hash(g.prompt))
                ).fetchone()[0]  # type: ignore[index]
                generation_id = conn.execute(
                    BARE_SQL_GENERATION,
                    (
                        g.source_message_id,
                        g.guild_id,
                        g.channel_id,
                        prompt_id,
                        g.requester_id,
                        g.generator,
                        json.dumps(g.params),
                    ),
                ).fetchone()[0]  # type: ignore[index]
                params: list[object] = []
                for position, image in enumerate(g.images):
                    params += [
                        generation_id,
                        position,
                        image.sha256,
                        image.storage_key,
                        image.width,
                        image.height,
                        image.phash,
                        image.seed,
                    ]
                conn.execute(images_sql, params)
        elapsed = time.perf_counter() - start
    return Measurement("(b) bare psycopg baseline", count, "generations", elapsed)


_store: LocalImageStore | None = None


def _init_worker(root: str) -> None:
    global _store
    _store = LocalImageStore(root)


def _intake_one(raw: bytes) -> ImageIn:
    assert _store is not None
    result = intake_and_store(raw, _store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    # Only the description travels back to the parent, not the image bytes.
    return ImageIn(result.sha256, key_for(result.sha256), result.width, result.height, result.phash)


def bench_full_intake(url: str, count: int, offset: int, workers: int) -> Measurement:
    raws = [synthetic_png(seed) for seed in range(count * 4)]
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with (
        tempfile.TemporaryDirectory(prefix="hps-bench-store-") as root,
        ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(root,)) as pool,
    ):
        list(pool.map(_noop, range(workers)))  # start the workers before timing
        start = time.perf_counter()
        results = pool.map(_intake_one, raws, chunksize=4)
        for index, images in enumerate(_groups(results, 4)):
            generation = generation_for(offset + index, images)
            run_transaction(factory, partial(record_generation, generation=generation))
        elapsed = time.perf_counter() - start
    engine.dispose()
    mean_kib = sum(len(raw) for raw in raws) / len(raws) / 1024
    return Measurement(
        f"(c) full intake, 4 x 512px PNG ({mean_kib:.0f} KiB), {workers} procs",
        count,
        "generations",
        elapsed,
    )


def _noop(value: int) -> int:
    return value


def _groups(results: Iterator[ImageIn], size: int) -> Iterator[list[ImageIn]]:
    group: list[ImageIn] = []
    for result in results:
        group.append(result)
        if len(group) == size:
            yield group
            group = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("HPS_BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--generations", type=int, default=2000)
    parser.add_argument("--intake-generations", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    recreate_database(args.url)
    # Warm both paths once (connections, statement caches), then measure on fresh rows.
    bench_db_operations(args.url, 50, 10_000_000)
    bench_bare_psycopg(args.url, 50, 20_000_000)
    a = bench_db_operations(args.url, args.generations, 0)
    b = bench_bare_psycopg(args.url, args.generations, 1_000_000)
    c = bench_full_intake(args.url, args.intake_generations, 2_000_000, args.workers)

    ratio = a.per_second / b.per_second
    if args.json:
        print(
            json.dumps(
                {m.name: round(m.per_second, 1) for m in (a, b, c)} | {"a_over_b": round(ratio, 3)}
            )
        )
        return
    print(f"{'measurement':58} {'generations':>11} {'seconds':>8} {'gen/s':>8}")
    for m in (a, b, c):
        print(f"{m.name:58} {m.units:>11} {m.seconds:>8.2f} {m.per_second:>8.1f}")
    print(f"(a)/(b) = {ratio:.2f}   targets: (a) >= 500/s and >= 0.5x (b); (c) >= 40/s")


if __name__ == "__main__":
    main()
