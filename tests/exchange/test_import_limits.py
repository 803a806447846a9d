"""Import limits: oversized parquet cells, memory held by an import of large images, and JSON
manifests that are too deep or too long: refused by name, with one line from the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import exchange.importer
import exchange.readers
from db.models import Prompt
from exchange.importer import ImportOptions, import_files
from exchange.readers import ImportFormatError, ImportRecord, open_source
from media.store import LocalImageStore
from tests.cli.test_cli import hps
from tests.exchange.conftest import counts
from tests.factories import noise_image

ROOT = Path(__file__).resolve().parents[2]
CAP = 200_000
PIXELS = 4_000_000
MB = 1_000_000


def png(seed: int, size: tuple[int, int] = (24, 24)) -> bytes:
    buffer = io.BytesIO()
    noise_image(seed, size).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(nbytes: int) -> bytes:
    """A valid RGB PNG of random pixels about ``nbytes`` long (stored, not compressed)."""
    side = max(1, int((nbytes / 3) ** 0.5))
    stride = 1 + 3 * side
    raw = bytearray(os.urandom(side * stride))
    raw[0::stride] = bytes(side)  # filter type 0 on every row

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(raw), 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def pick_rows(cells: list[tuple[bytes | None, bytes | None]]) -> list[dict[str, Any]]:
    """Rows of the public Pick-a-Pic shape, without image uids (so the reader would hash)."""
    return [
        {"caption": f"prompt {n}", "jpg_0": first, "jpg_1": second, "label_0": 1.0,
         "label_1": 0.0, "ranking_id": n}
        for n, (first, second) in enumerate(cells, start=1)
    ]  # fmt: skip


def run_import(
    factory: sessionmaker[Session], store: LocalImageStore, path: Path, **options: Any
) -> Any:
    return import_files(
        factory,
        store,
        [path],
        ImportOptions(max_image_bytes=CAP, max_image_pixels=PIXELS, **options),
    )


def test_an_oversized_cell_is_refused_by_name_before_it_is_hashed_or_read(
    pg_factory: sessionmaker[Session],
    store: LocalImageStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = os.urandom(CAP + 1)  # one byte over the cap (and not an image at all)
    path = tmp_path / "train.parquet"
    rows = pick_rows([(png(1), png(2)), (png(3), big), (png(4), png(5))])
    pq.write_table(pa.Table.from_pylist(rows), path)

    hashed: list[int] = []
    real_sha256 = hashlib.sha256

    def spy_sha256(data: Any = b"", *args: Any, **kwargs: Any) -> Any:
        hashed.append(len(memoryview(data)))
        return real_sha256(data, *args, **kwargs)

    taken_in: list[int] = []
    real_intake = exchange.importer.intake_image

    def spy_intake(raw: bytes, **kwargs: Any) -> Any:
        taken_in.append(len(raw))
        return real_intake(raw, **kwargs)

    monkeypatch.setattr(exchange.readers.hashlib, "sha256", spy_sha256)
    monkeypatch.setattr(exchange.importer, "intake_image", spy_intake)

    with pytest.raises(ImportFormatError) as caught:
        run_import(pg_factory, store, path)
    assert str(caught.value) == (
        "train.parquet: row 2 (ranking_id 2): jpg_1 refused: the image is "
        f"{CAP + 1:,} bytes; the limit is {CAP:,} bytes"
    )
    with pg_factory() as session:  # the record before it is imported, nothing of it
        assert set(session.scalars(select(Prompt.text))) == {"prompt 1"}

    result = run_import(pg_factory, store, path, skip_invalid=True)
    assert result.invalid == [str(caught.value)]
    assert result.choices_added == 1 and result.choices_present == 1
    with pg_factory() as session:
        assert set(session.scalars(select(Prompt.text))) == {"prompt 1", "prompt 3"}
    assert hashed and len(big) not in hashed  # the other cells were hashed, never this one
    assert taken_in and len(big) not in taken_in
    assert counts(pg_factory)["images"] == 4


def test_cells_in_other_binary_layouts_and_null_cells(
    pg_factory: sessionmaker[Session], store: LocalImageStore, tmp_path: Path
) -> None:
    """large_binary columns and several row groups read like binary ones; a null cell is a
    bad record; a cell exactly at the cap passes the size check."""
    schema = pa.schema(
        [("caption", pa.string()), ("jpg_0", pa.large_binary()), ("jpg_1", pa.large_binary()),
         ("label_0", pa.float64()), ("label_1", pa.float64()), ("ranking_id", pa.int64())]
    )  # fmt: skip
    at_cap = png(9, (250, 250))
    rows = pick_rows([(png(1), png(2)), (png(3), None), (png(4), png(5)), (at_cap, png(6))])
    path = tmp_path / "large-binary.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=3)
    cap = len(at_cap)
    result = import_files(
        pg_factory,
        store,
        [path],
        ImportOptions(max_image_bytes=cap, max_image_pixels=PIXELS, skip_invalid=True),
    )
    assert result.invalid == [
        "large-binary.parquet: row 2 (ranking_id 2): jpg_1 holds no image bytes"
    ]
    assert result.choices_added == 3


def test_rows_of_one_choice_across_read_batches_and_row_groups(
    store: LocalImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pick among three images is two rows with one ranking_id: one record even when its
    rows are read in different batches and row groups."""
    monkeypatch.setattr(exchange.readers, "PARQUET_BATCH_BYTES", 1)  # one row per batch
    images = [png(seed) for seed in range(5)]
    rows = [
        {"caption": "three", "jpg_0": images[0], "jpg_1": images[1], "label_0": 1.0,
         "label_1": 0.0, "ranking_id": 7, "image_0_position": 0, "image_1_position": 1},
        {"caption": "three", "jpg_0": images[0], "jpg_1": images[2], "label_0": 1.0,
         "label_1": 0.0, "ranking_id": 7, "image_0_position": 0, "image_1_position": 2},
        {"caption": "two", "jpg_0": images[3], "jpg_1": images[4], "label_0": 0.0,
         "label_1": 1.0, "ranking_id": 8, "image_0_position": 0, "image_1_position": 1},
    ]  # fmt: skip
    path = tmp_path / "sets.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1)
    records = [
        entry for entry in open_source(path, max_image_bytes=CAP).records()
        if isinstance(entry, ImportRecord)
    ]  # fmt: skip
    assert [(r.prompt, len(r.images), r.chosen_index) for r in records] == [
        ("three", 3, 0),
        ("two", 2, 1),
    ]
    assert records[0].where == "sets.parquet: rows 1-2 (ranking_id 7)"
    assert [image.read(CAP) for image in records[0].images] == images[:3]


CHILD = """
import json, os, sys
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
import cli.commands.exchange, db.engine, exchange.importer, media.store, pyarrow.parquet

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024

base = status("VmRSS")
from cli.main import main

status_code = main(["import", sys.argv[1], "--skip-invalid", "--no-progress"])
print(json.dumps({"base_mib": base, "peak_mib": status("VmHWM")}), file=sys.stderr)
sys.exit(status_code)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_an_import_of_large_cells_holds_a_few_rows_not_the_file(tmp_path: Path) -> None:
    """15 rows of two 10 MB PNGs (3 with a 15 MB cell over a 12 MB cap), written as 🤗
    datasets writes parquet: the import's memory grows by far less than the file (the old
    reader held whole batches of the file, twice: as Arrow and as Python bytes)."""
    from migrations.runner import upgrade

    work = tmp_path / "memory"
    work.mkdir()
    try:
        schema = pa.schema(
            [("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
             ("label_0", pa.float64()), ("label_1", pa.float64())]
        )  # fmt: skip
        path = work / "large.parquet"
        options: dict[str, Any] = {"compression": "none", "use_content_defined_chunking": True}
        with pq.ParquetWriter(path, schema, **options) as writer:
            for first in range(0, 15, 2):
                rows = []
                for n in range(first, min(first + 2, 15)):
                    second = os.urandom(15 * MB) if n % 5 == 4 else noise_png(10 * MB)
                    rows.append({"caption": f"p{n}", "jpg_0": noise_png(10 * MB),
                                 "jpg_1": second, "label_0": 1.0, "label_1": 0.0})  # fmt: skip
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        file_mib = path.stat().st_size / 2**20
        upgrade(f"sqlite:///{work / 'hps.sqlite3'}")
        environment = {
            k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STORAGE_URL")
        }
        environment |= {
            "PYTHONPATH": str(ROOT),
            "HPS_DATA_DIR": str(work),
            "MAX_IMAGE_BYTES": str(12 * MB),
        }
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)],
            cwd=work,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr
        summary = json.loads(child.stdout)
        assert summary["records"] == 12 and len(summary["invalid"]) == 3
        assert all("jpg_1 refused: the image is 15,000,000 bytes" in m for m in summary["invalid"])
        memory = json.loads(child.stderr.strip().splitlines()[-1])
        grown = memory["peak_mib"] - memory["base_mib"]
        assert grown < 0.75 * file_mib, (memory, file_mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- JSON manifests ------------------------------------------------------------------------


def test_deeply_nested_json_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    deep_list = tmp_path / "deep-list.json"
    deep_list.write_text("[" * 200_000 + "]" * 200_000)
    deep_record = tmp_path / "deep-record.json"
    deep_record.write_text('[{"prompt": "p", "file_path": ' + "[" * 200_000 + "]" * 200_000 + "}]")
    deep_object = tmp_path / "deep-object.json"
    deep_object.write_text('{"a": ' * 200_000 + "1" + "}" * 200_000)
    cases = {
        deep_list: "deep-list.json: record 1 is nested too deeply",
        deep_record: "deep-record.json: record 1 is nested too deeply",
        deep_object: "deep-object.json: expected a JSON list of records",
    }
    data_dir = str(tmp_path / "data")
    for path, expected in cases.items():
        result = hps("import", str(path), "--no-progress", cwd=tmp_path, HPS_DATA_DIR=data_dir)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
        assert result.stderr.startswith("hps import: error: ") and expected in result.stderr


def test_json_is_read_one_record_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records cut by every read boundary parse as json.loads does; a record longer than the
    limit, trailing garbage, a bad record and a non-list are refused naming the file."""
    records = [
        {"prompt": f'p{n} é ☃ \\ " ', "file_path": ["a.png", "b.png"], "human_preference": n % 2,
         "weight": 1.5e-7 * n, "big": 10**20 + n, "flags": [True, False, None]}
        for n in range(12)
    ]  # fmt: skip
    path = tmp_path / "m.json"
    for indent in (None, 2):
        path.write_text(json.dumps(records, indent=indent, ensure_ascii=False), encoding="utf-8")
        for chars in (1, 2, 3, 7, 64, 4096):
            monkeypatch.setattr(exchange.readers, "JSON_READ_CHARS", chars)
            assert list(exchange.readers._json_list(path)) == records, (indent, chars)

    def refused(text: str) -> str:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ImportFormatError) as caught:
            list(exchange.readers._json_list(path))
        return str(caught.value)

    monkeypatch.setattr(exchange.readers, "JSON_READ_CHARS", 5)
    assert "not valid JSON (Expecting value at character 4)" in refused("[1, ]")
    assert "1.5e" not in refused("[1.5e]") and "expected ',' or ']'" in refused("[1.5e]")
    assert "extra data after the list" in refused("[1] [2]")
    assert "expected a JSON list of records" in refused('{"prompt": "x"}')
    assert "expected a JSON list of records" in refused("")
    assert "record 1: Exceeds the limit" in refused("[" + "1" * 5000 + "]")
    monkeypatch.setattr(exchange.readers, "MAX_JSON_RECORD_CHARS", 100)
    message = refused('[{"prompt": "short"}, {"prompt": "' + "x" * 1000 + '"}]')
    assert message == f"{path}: record 2 is longer than 100 characters"


def test_hpd_image_files_are_sized_before_they_are_read(
    pg_factory: sessionmaker[Session],
    store: LocalImageStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "small.png").write_bytes(png(1))
    with (tmp_path / "huge.png").open("wb") as handle:
        handle.truncate(50 * MB)  # sparse: 50 MB that cost no disk
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps([{"prompt": "p", "file_path": ["small.png", "huge.png"], "human_preference": 0}])
    )
    opened: list[str] = []
    real_open = Path.open

    def spy_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy_open)
    with pytest.raises(ImportFormatError) as caught:
        run_import(pg_factory, store, manifest)
    assert "m.json: record 1 (prompt 'p'): image 2 (huge.png) refused: the file is " in str(
        caught.value
    )
    assert f"{50 * MB:,} bytes; the limit is {CAP:,} bytes" in str(caught.value)
    assert "huge.png" not in opened and "small.png" in opened
