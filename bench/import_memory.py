"""Peak memory of ``hps import`` on Pick-a-Pic parquet files with large image cells.

    .venv/bin/python -m bench.import_memory [--size-mb 1000] [--cell-mb 20] [--cap-mib 25]
                                            [--url URL | --sqlite] [--json]

Three files are written into a temporary folder (deleted afterwards):

- ``large.parquet``, about ``--size-mb``: rows of two ``--cell-mb`` cells, written the way
  🤗 datasets 5 writes parquet (row groups of at most 100 MB, content-defined pages of 256 KiB
  to 1 MiB, image columns PLAIN and uncompressed, a page index). Cells are noise PNGs under
  the cap, except every 8th row's ``jpg_1``: 1.5 x the cap of random bytes, which the import
  must refuse by name;
- ``issue.parquet``, the file of the report: 24 rows of 12 MB PNG cells in one row group with
  pyarrow's default pages (one page per column chunk: 288 MB per page);
- ``huge.parquet``: a good row, a row whose ``jpg_0`` is one 300 MB cell, a good row.

Every measurement runs in its own child process, which reports its peak RSS (``VmHWM`` of
``/proc/self/status``; ``ru_maxrss`` would also count the parent's memory copied at the fork,
which Linux carries across ``exec``). For each file:

(a) ``hps import --skip-invalid --no-progress`` (the CLI, ``MAX_IMAGE_BYTES`` = ``--cap-mib``):
    every image through the intake, the file store and the database (PostgreSQL ``--url``,
    recreated; or ``--sqlite``, a file in the temporary folder);
(b) baseline, the reading pattern of the importer before it streamed: ``ParquetFile``
    defaults, ``iter_batches(batch_size=256)``, ``to_pylist()`` of whole batches and a sha256
    of every cell. A lower bound of the old import: that one also kept 64 records' images;
(c) the streaming reader alone (``exchange.readers``): every record's images read once, what
    (a) pays for reading before any intake or database work.

(b) and (c) run with ``MIMALLOC_PURGE_DELAY=0``, which ``hps import`` sets for itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Measurement

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hps_bench_import_memory"
ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
MIB = 2**20
ROWS_PER_OVERSIZED = 8  # every 8th row of large.parquet has an oversized jpg_1
HF_ROW_GROUP_BYTES = 100 * MB  # 🤗 datasets' MAX_ROW_GROUP_SIZE
HF_OPTIONS: dict[str, Any] = {  # datasets.arrow_writer.ParquetWriter for binary/image columns
    "use_content_defined_chunking": {
        "min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0
    },
    "compression": {"jpg_0": "none", "jpg_1": "none"} | {
        name: "snappy" for name in ("caption", "label_0", "label_1", "ranking_id",
                                    "image_0_uid", "image_1_uid", "model_0", "model_1",
                                    "user_id", "has_label")
    },
    "column_encoding": {"jpg_0": "PLAIN", "jpg_1": "PLAIN"},
    "use_dictionary": ["caption", "image_0_uid", "image_1_uid", "model_0", "model_1"],
}  # fmt: skip


def noise_png(nbytes: int) -> bytes:
    """An 8-bit RGB PNG of random pixels, about ``nbytes`` long (stored, not compressed),
    built by hand: Pillow takes ~1.7 s to encode one of 20 MB."""
    side = max(1, int((nbytes / 3) ** 0.5))
    stride = 1 + 3 * side
    raw = bytearray(os.urandom(side * stride))
    raw[0::stride] = bytes(side)  # filter type 0 on every row

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(bytes(raw), 0)),
            chunk(b"IEND", b""),
        ]
    )


def schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("caption", pa.string()),
            ("jpg_0", pa.binary()),
            ("jpg_1", pa.binary()),
            ("label_0", pa.float64()),
            ("label_1", pa.float64()),
            ("ranking_id", pa.int64()),
            ("image_0_uid", pa.string()),
            ("image_1_uid", pa.string()),
            ("model_0", pa.string()),
            ("model_1", pa.string()),
            ("user_id", pa.int64()),
            ("has_label", pa.bool_()),
        ]
    )


def row(number: int, jpg_0: bytes, jpg_1: bytes) -> dict[str, Any]:
    """A row as the public Pick-a-Pic has them (uids given, so nothing needs hashing)."""
    return {
        "caption": f"benchmark prompt {number}: a lighthouse in a storm, oil painting",
        "jpg_0": jpg_0, "jpg_1": jpg_1,
        "label_0": float(number % 2), "label_1": float(1 - number % 2),
        "ranking_id": number, "image_0_uid": str(uuid.uuid4()), "image_1_uid": str(uuid.uuid4()),
        "model_0": "sd-a", "model_1": "sd-b", "user_id": number % 7, "has_label": True,
    }  # fmt: skip


@dataclass
class FileSpec:
    path: Path
    rows: int
    oversized: int  # rows holding a cell over the cap
    layout: str


def write_large(path: Path, size_mb: int, cell_mb: int, cap: int) -> FileSpec:
    """Rows of two cells, as 🤗 datasets writes them (row groups <= 100 MB, CDC pages)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = schema()
    rows = max(1, size_mb // (2 * cell_mb))
    per_group = max(1, HF_ROW_GROUP_BYTES // (2 * cell_mb * MB))
    oversized = 0
    with pq.ParquetWriter(path, fields, write_page_index=True, **HF_OPTIONS) as writer:
        group: list[dict[str, Any]] = []
        for number in range(rows):
            bad = number % ROWS_PER_OVERSIZED == ROWS_PER_OVERSIZED - 1
            oversized += bad
            second = os.urandom(cap + cap // 2) if bad else noise_png(cell_mb * MB)
            group.append(row(number, noise_png(cell_mb * MB), second))
            if len(group) == per_group:
                writer.write_table(pa.Table.from_pylist(group, schema=fields))
                group = []
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema=fields))
    layout = f"datasets-style: {per_group} rows/row group, CDC pages, images uncompressed"
    return FileSpec(path, rows, oversized, layout)


def write_issue(path: Path) -> FileSpec:
    """The report's file: 24 rows of 12 MB cells, one row group, pyarrow's default pages."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = schema()
    table = pa.Table.from_pylist(
        [row(number, noise_png(12 * MB), noise_png(12 * MB)) for number in range(24)],
        schema=fields,
    )
    pq.write_table(table, path)
    return FileSpec(path, 24, 0, "pyarrow defaults: 1 row group, 1 page per column (288 MB)")


def write_huge(path: Path) -> FileSpec:
    """A 300 MB cell between two good rows (one row group each)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = schema()
    with pq.ParquetWriter(path, fields) as writer:
        for number, first in enumerate(
            [noise_png(1 * MB), os.urandom(300 * MB), noise_png(1 * MB)]
        ):
            writer.write_table(
                pa.Table.from_pylist([row(number, first, noise_png(1 * MB))], schema=fields)
            )
    return FileSpec(path, 3, 1, "3 row groups of 1 row, one with a 300 MB cell")


# --- children -----------------------------------------------------------------------------


def child_old_read(path: Path) -> dict[str, Any]:
    """(b) The old reader's pattern: whole batches of 256 rows as Python objects, every cell
    hashed."""
    import pyarrow.parquet as pq

    rows = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
        for item in batch.to_pylist():
            rows += 1
            for name in ("jpg_0", "jpg_1"):
                hashlib.sha256(item[name]).hexdigest()
    return {"rows": rows}


def child_new_read(path: Path, cap: int) -> dict[str, Any]:
    """(c) The streaming reader alone: every record's images read (copied) once."""
    from exchange.readers import ImportFormatError, ImportRecord, open_source

    records = refused = 0
    for entry in open_source(path, max_image_bytes=cap).records():
        if isinstance(entry, ImportRecord):
            records += 1
            for image in entry.images:
                image.read(cap)
        elif isinstance(entry, ImportFormatError):
            refused += 1
    return {"records": records, "refused": refused}


def run_as_child(mode: str, rest: list[str], cap: int) -> int:
    """One measurement, in this (child) process; returns the exit status."""
    if mode == "cli":
        from cli.main import main as hps

        return hps(rest)
    path = Path(rest[0])
    result = child_old_read(path) if mode == "old-read" else child_new_read(path, cap)
    print(json.dumps(result))
    return 0


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(command: list[str], env: dict[str, str], out: Path) -> tuple[float, float]:
    """Run ``python -m bench.import_memory --child ...`` with stdout to ``out``; return its
    seconds and the peak RSS (MiB) it reported."""
    peak_file = out.with_suffix(".peak")
    peak_file.unlink(missing_ok=True)
    full = [sys.executable, "-m", "bench.import_memory", "--peak-file", str(peak_file), *command]
    with out.open("w") as stdout:
        start = time.perf_counter()
        child = subprocess.run(full, cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE)
        seconds = time.perf_counter() - start
    if child.returncode != 0:
        stderr = child.stderr.decode(errors="replace")
        raise RuntimeError(f"{' '.join(command[:3])}... failed ({child.returncode}): {stderr}")
    return seconds, float(peak_file.read_text())


@dataclass
class MemoryMeasurement(Measurement):
    """A read of one file's ``units`` rows, with its size and the reader's peak memory."""

    file: str = ""
    megabytes: float = 0.0
    peak_mib: float = 0.0
    note: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.megabytes / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "measurement": self.name, "rows": self.units,
            "seconds": round(self.seconds, 2), "rows_per_s": round(self.per_second, 2),
            "mb_per_s": round(self.mb_per_s, 1), "peak_rss_mib": round(self.peak_mib),
            "note": self.note,
        }  # fmt: skip


def recreate(url: str) -> None:
    from sqlalchemy.engine import make_url

    from bench.ingest import recreate_database
    from migrations.runner import upgrade

    if make_url(url).get_backend_name() == "postgresql":
        recreate_database(url)
    else:
        upgrade(url)


def measure(spec: FileSpec, work: Path, url: str, cap: int) -> list[MemoryMeasurement]:
    megabytes = spec.path.stat().st_size / MB
    name = spec.path.name
    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STORAGE_URL")}
    base_env["PYTHONPATH"] = str(ROOT)
    results = []

    def measured(label: str, seconds: float, peak: float, note: str = "") -> MemoryMeasurement:
        return MemoryMeasurement(
            label, spec.rows, "rows", seconds, name, megabytes=megabytes, peak_mib=peak, note=note
        )

    recreate(url)
    store = work / f"store-{spec.path.stem}"
    env = base_env | {
        "HPS_DATA_DIR": str(work / "data"),
        "DATABASE_URL": url,
        "STORAGE_URL": f"file://{store}",
        "MAX_IMAGE_BYTES": str(cap),
    }
    out = work / "out.json"
    command = ["--child", "cli", "import", str(spec.path), "--skip-invalid", "--no-progress"]
    seconds, peak = run_child(command, env, out)
    summary = json.loads(out.read_text())
    note = f"{summary['records']} records, {len(summary['invalid'])} refused"
    if len(summary["invalid"]) != spec.oversized:
        note += f" (expected {spec.oversized} refused!)"
    results.append(measured("(a) hps import", seconds, peak, note))
    shutil.rmtree(store, ignore_errors=True)

    # (b) and (c) with the allocator setting that `hps import` makes for itself in (a).
    read_env = base_env | {"MIMALLOC_PURGE_DELAY": "0"}
    seconds, peak = run_child(["--child", "old-read", str(spec.path)], read_env, out)
    results.append(measured("(b) old read: to_pylist + sha256", seconds, peak))
    child = ["--child", "new-read", "--cap-bytes", str(cap), str(spec.path)]
    seconds, peak = run_child(child, read_env, out)
    result = json.loads(out.read_text())
    note = f"{result['records']} records, {result['refused']} refused"
    results.append(measured("(c) streaming reader alone", seconds, peak, note))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("HPS_BENCH_IMPORT_URL", DEFAULT_URL))
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead of --url")
    parser.add_argument("--size-mb", type=int, default=1000, help="size of large.parquet")
    parser.add_argument("--cell-mb", type=int, default=20, help="image cell size in large")
    parser.add_argument("--cap-mib", type=int, default=25, help="MAX_IMAGE_BYTES in MiB")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--peak-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["cli", "old-read", "new-read"], help=argparse.SUPPRESS)
    parser.add_argument("--cap-bytes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        status = run_as_child(args.child, args.rest, args.cap_bytes)
        args.peak_file.write_text(f"{peak_rss_mib():.1f}")
        sys.exit(status)

    cap = args.cap_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="hps-bench-import-memory-"))
    try:
        url = f"sqlite:///{work / 'bench.sqlite3'}" if args.sqlite else args.url
        setup = time.perf_counter()
        specs = [
            write_large(work / "large.parquet", args.size_mb, args.cell_mb, cap),
            write_issue(work / "issue.parquet"),
            write_huge(work / "huge.parquet"),
        ]
        setup_s = time.perf_counter() - setup
        results = [m for spec in specs for m in measure(spec, work, url, cap)]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps([m.as_dict() for m in results]))
        return
    from sqlalchemy.engine import make_url

    database = "SQLite" if args.sqlite else make_url(url).render_as_string(hide_password=True)
    print(f"MAX_IMAGE_BYTES {cap:,}; database {database}; files written in {setup_s:.0f} s")
    for spec in specs:
        size = spec.path.name, spec.rows, spec.oversized, spec.layout
        print("%-14s %3d rows, %d with a cell over the cap; %s" % size)  # noqa: UP031
    print(
        f"{'file':14} {'measurement':34} {'rows':>5} {'s':>7} {'rows/s':>7} {'MB/s':>6} "
        f"{'peak RSS':>9} {'vs (b)':>6}  note"
    )
    baselines = {m.file: m.peak_mib for m in results if m.name.startswith("(b)")}
    for m in results:
        print(
            f"{m.file:14} {m.name:34} {m.units:>5} {m.seconds:>7.1f} {m.per_second:>7.2f} "
            f"{m.mb_per_s:>6.1f} {m.peak_mib:>5.0f} MiB {m.peak_mib / baselines[m.file]:>6.2f}"
            f"  {m.note}"
        )


if __name__ == "__main__":
    main()
