"""Dataset exchange throughput: export to Pick-a-Pic parquet and import it back.

    .venv/bin/python -m bench.exchange [--choices 10000] [--voters 4] [--size 64] [--json]

A generated community of ``choices / voters`` generations of 4 images (``size`` px, stored
as PNG) with ``voters`` picks each is written to its own database (``hps_bench_exchange``,
recreated on every run). Then, in this one process:

(a) ``exchange.export.export_dataset`` to Pick-a-Pic parquet only: rows/s with image bytes
    (a pick among 4 images is 3 rows of 2 JPEGs each); also the full export (+ HPD JSON and
    image folders, card, histogram) for reference;
(b) baseline for (a): the same parquet rows written by a bare ``pyarrow.parquet.ParquetWriter``
    from memory (rows, JPEG bytes and all, prepared before timing), same row groups;
(b') the same rows through a hand-written pipeline: one SQL query (psycopg, server-side
    cursor), the same blob reads and JPEG encoding, a bare ParquetWriter: what (a) costs
    without db/ and exchange/ around it (no card, no split files, no consent filter on
    requesters);
(c) ``exchange.importer.import_files`` of the files of (a) into an empty database and store:
    every distinct image through the intake (decode, verify, PNG re-encode, sha256 + pHash),
    stored with fsync, one transaction per choice;
(d) baseline for (c): a bare pyarrow read of the same files touching every image's bytes;
(e) for attribution: the intake of (c) alone on the distinct images (no database, no store).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter
from sqlalchemy.engine import make_url

from bench.common import Measurement
from bench.ingest import recreate_database
from db.engine import make_engine, make_session_factory
from db.ingest import ChoiceIn, GenerationIn, ImageIn, record_choice, record_generation
from db.models import ChoiceMethod
from exchange.card import histogram_png
from exchange.export import ExportOptions, export_dataset
from exchange.export_pickapic import DEFAULT_ROW_GROUP_ROWS, pairs_for_choice, pickapic_schema
from exchange.images import ImageReader
from exchange.importer import ImportOptions, import_files
from media.intake import encode_canonical, intake_image
from media.store import LocalImageStore, key_for

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hps_bench_exchange"
IMAGES_PER_SET = 4
MAX_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000


def synthetic_image(seed: int, size: int) -> Image.Image:
    """A small picture that compresses like a generated one (gradient, shapes, blur)."""
    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    tint = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    image = Image.blend(base, tint, 0.5)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(size // 8, size // 3)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image.filter(ImageFilter.GaussianBlur(1))


def populate(url: str, store: LocalImageStore, choices: int, voters: int, size: int) -> int:
    """The community; returns the number of generations."""
    generations = max(1, choices // voters)
    factory = make_session_factory(make_engine(url))
    rng = random.Random(1)
    batch = 100
    for start in range(0, generations, batch):
        with factory() as session, session.begin():
            for index in range(start, min(start + batch, generations)):
                images = []
                for position in range(IMAGES_PER_SET):
                    result = encode_canonical(
                        synthetic_image(index * IMAGES_PER_SET + position, size),
                        compute_phash=False,
                    )
                    path = store.path_for(result.sha256)  # setup: no fsync per blob
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(result.data)
                    images.append(
                        ImageIn(result.sha256, key_for(result.sha256), size, size, seed=position)
                    )
                recorded = record_generation(
                    session,
                    GenerationIn(
                        source_message_id=1_500_000_000_000_000_000 + index,
                        channel_id=900,
                        guild_id=None,
                        prompt=f"benchmark prompt {index}: a lighthouse in a storm, oil painting",
                        generator="bench-model",
                        images=images,
                        requester_id=20_000 + index % 97,
                    ),
                )
                for voter in range(voters):
                    record_choice(
                        session,
                        ChoiceIn(
                            30_000 + voter,
                            rng.randrange(IMAGES_PER_SET),
                            ChoiceMethod.button,
                            recorded.generation_id,
                        ),
                    )
    return generations


def bench_export(url: str, store: LocalImageStore, out: Path, formats: tuple[str, ...]) -> Any:
    factory = make_session_factory(make_engine(url))
    options = ExportOptions("bench-split", "bench-user-salt", formats=formats)
    start = time.perf_counter()
    summary = export_dataset(factory, store, out, options)
    return summary, time.perf_counter() - start


def bench_bare_write(files: list[Path], out: Path) -> Measurement:
    tables = [pq.read_table(path) for path in files]
    rows = [row for table in tables for row in table.to_pylist()]
    schema = pickapic_schema()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with pq.ParquetWriter(out / "bare.parquet", schema, compression="snappy") as writer:
        for offset in range(0, len(rows), DEFAULT_ROW_GROUP_ROWS):
            chunk = rows[offset : offset + DEFAULT_ROW_GROUP_ROWS]
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    elapsed = time.perf_counter() - start
    return Measurement("(b) bare pyarrow write of the same rows", len(rows), "rows", elapsed)


HAND_WRITTEN_QUERY = """
SELECT c.id, c.user_id, c.updated_at, c.chosen_image_id, p.text, g.generator,
       array_agg(i.id ORDER BY i.position), array_agg(i.sha256 ORDER BY i.position)
FROM choices c
JOIN generations g ON g.id = c.generation_id
JOIN prompts p ON p.id = g.prompt_id
JOIN discord_users u ON u.id = c.user_id AND NOT u.opted_out
JOIN images i ON i.generation_id = g.id
GROUP BY c.id, p.text, g.generator
ORDER BY c.generation_id, c.id
"""


def bench_hand_written(url: str, store: LocalImageStore, out: Path) -> Measurement:
    """The same rows from one hand-written SQL query, the same blob reads and JPEG encoding,
    one parquet file: what the export costs without db/ and exchange/ around it."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = pickapic_schema()
    out.mkdir(parents=True, exist_ok=True)
    reader = ImageReader(store)
    rows = 0
    start = time.perf_counter()
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor(name="export") as cursor,
        pq.ParquetWriter(out / "hand.parquet", schema, compression="snappy") as writer,
    ):
        cursor.execute(HAND_WRITTEN_QUERY)
        buffer: list[dict[str, object]] = []
        for choice_id, user, at, chosen_id, prompt, generator, ids, shas in cursor:
            chosen = ids.index(chosen_id)
            jpegs = [reader.jpeg(sha) for sha in shas]
            for i, j, label_i, label_j in pairs_for_choice(len(ids), chosen):
                buffer.append(
                    {
                        "caption": prompt, "jpg_0": jpegs[i], "jpg_1": jpegs[j],
                        "label_0": label_i, "label_1": label_j, "best_image_uid": shas[chosen],
                        "image_0_uid": shas[i], "image_1_uid": shas[j], "model_0": generator,
                        "model_1": generator, "user_id": str(user), "ranking_id": choice_id,
                        "created_at": at, "num_example_per_prompt": 0, "has_label": True,
                        "are_different": True, "generation_uid": "",
                        "image_0_position": i, "image_1_position": j,
                    }
                )  # fmt: skip
            if len(buffer) >= DEFAULT_ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                rows += len(buffer)
                buffer = []
        if buffer:
            writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
            rows += len(buffer)
    elapsed = time.perf_counter() - start
    return Measurement("(b') hand-written SQL + blobs + JPEG + pyarrow", rows, "rows", elapsed)


def bench_import(url: str, files: list[Path], store: LocalImageStore) -> tuple[Measurement, int]:
    recreate_database(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    options = ImportOptions(max_image_bytes=MAX_BYTES, max_image_pixels=MAX_PIXELS)
    start = time.perf_counter()
    summary = import_files(factory, store, files, options)
    elapsed = time.perf_counter() - start
    engine.dispose()
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    return (
        Measurement("(c) import_files (intake, store, db/)", rows, "rows", elapsed),
        summary.choices_added,
    )


def bench_bare_read(files: list[Path]) -> tuple[Measurement, dict[str, bytes]]:
    distinct: dict[str, bytes] = {}
    rows = 0
    start = time.perf_counter()
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                rows += 1
                distinct.setdefault(row["image_0_uid"], row["jpg_0"])
                distinct.setdefault(row["image_1_uid"], row["jpg_1"])
    elapsed = time.perf_counter() - start
    return Measurement("(d) bare pyarrow read of the same rows", rows, "rows", elapsed), distinct


def bench_intake_only(images: dict[str, bytes]) -> Measurement:
    start = time.perf_counter()
    for raw in images.values():
        intake_image(raw, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    elapsed = time.perf_counter() - start
    return Measurement("(e) intake alone, distinct images", len(images), "images", elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("HPS_BENCH_EXCHANGE_URL", DEFAULT_URL))
    parser.add_argument("--choices", type=int, default=10_000)
    parser.add_argument("--voters", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hps-bench-exchange-"))
    try:
        recreate_database(args.url)
        store = LocalImageStore(work / "images")
        setup = time.perf_counter()
        generations = populate(args.url, store, args.choices, args.voters, args.size)
        setup_s = time.perf_counter() - setup

        # Warm one-time imports (matplotlib; pyarrow's pandas shim) before any timing.
        histogram_png([1], [2])
        pa.Table.from_pylist([], schema=pickapic_schema())
        summary, export_s = bench_export(args.url, store, work / "export", ("pickapic",))
        rows = summary.counts["pairs"]
        choices = summary.counts["choices"]
        a = Measurement("(a) export_dataset, Pick-a-Pic parquet", rows, "rows", export_s)
        _full, full_s = bench_export(args.url, store, work / "export-full", ("pickapic", "hpd"))
        a_full = Measurement("(a') export_dataset, parquet + HPD + card", rows, "rows", full_s)
        files = sorted((summary.path / "data").glob("*.parquet"))
        parquet_mib = sum(path.stat().st_size for path in files) / 2**20
        b = bench_bare_write(files, work / "bare")
        b2 = bench_hand_written(args.url, store, work / "hand")
        c, imported = bench_import(args.url, files, LocalImageStore(work / "imported"))
        d, distinct = bench_bare_read(files)
        e = bench_intake_only(distinct)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    export_ratio = a.per_second / b.per_second
    hand_ratio = a.per_second / b2.per_second
    import_ratio = c.per_second / d.per_second
    if args.json:
        print(
            json.dumps(
                {m.name: round(m.per_second, 1) for m in (a, a_full, b, b2, c, d, e)}
                | {"export_over_bare": round(export_ratio, 4)}
                | {"export_over_hand_written": round(hand_ratio, 3)}
                | {"import_over_bare": round(import_ratio, 4)}
                | {"choices": choices, "rows": rows, "imported_choices": imported}
            )
        )
        return
    print(
        f"{choices:,} choices on {generations:,} generations of {IMAGES_PER_SET} images "
        f"({args.size}x{args.size}); {rows:,} Pick-a-Pic rows, {parquet_mib:.1f} MiB of parquet; "
        f"setup {setup_s:.1f} s"
    )
    print(f"{'measurement':46} {'units':>8} {'seconds':>8} {'per s':>9}  {'choices/s':>9}")
    for m in (a, a_full, b, b2, c, d, e):
        per_choice = f"{choices / m.seconds:>9.0f}" if m.unit == "rows" else f"{'':>9}"
        print(
            f"{m.name:46} {m.units:>8} {m.seconds:>8.2f} {m.per_second:>7.0f}/{m.unit[0]}"
            f"  {per_choice}"
        )
    print(
        f"(a)/(b) = {export_ratio:.3f}   (a)/(b') = {hand_ratio:.2f}   (c)/(d) = {import_ratio:.4f}"
    )
    print(f"imported choices: {imported:,} of {choices:,}")


if __name__ == "__main__":
    main()
