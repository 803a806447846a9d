"""Readers of the public preference formats, as import records (no torch, no hps/).

- **HPD v1 JSON**: a list of ``{"prompt", "file_path": [...], "human_preference": <index>}``.
- **HPD v2 JSON**: ``{"prompt", "image_path": [...], "human_preference": [1/0 per image]}``
  (train) or ``{"prompt", "image_path": [...], "rank": [...]}`` (test, lower is better).
- **Pick-a-Pic parquet**: ``caption``, ``jpg_0``/``jpg_1`` (image bytes), ``label_0``/
  ``label_1`` (1/0, 0/1 or 0.5/0.5 for a tie), and optionally ``ranking_id``,
  ``image_*_uid``, ``best_image_uid``, ``model_*``, ``user_id``, ``created_at``,
  ``has_label`` (rows with ``False`` are unlabeled and skipped), and this platform's
  ``generation_uid`` / ``image_*_position``.

One record is one choice: a prompt, its image set in position order, the chosen index (None
for a tie: several images ranked best, or labels 0.5/0.5), and keys naming the generation and
the user in the source. Consecutive parquet rows with the same ``ranking_id`` are one choice
(the platform's export writes a pick among n images as n - 1 rows). A malformed record raises
:class:`ImportFormatError` naming the file and the record, before anything of it is written.

HPD image paths are relative to the manifest's folder (or ``image_root``) and must stay inside
it: a manifest cannot make the importer read files elsewhere on the machine.

Memory is bounded by a choice's rows, not by the file. A parquet file is read in batches of
about ``PARQUET_BATCH_BYTES`` of image data (down to one row), through a small read buffer,
never a whole row group, and the small columns are read ahead so that a choice is handed over
as soon as its rows are in. An image cell stays in Arrow memory (its size comes from the
column's offsets) and is checked against ``max_image_bytes`` before it is hashed, decoded or
copied: an oversized cell refuses its record by name and costs no more than reading it. The
floor is Arrow's: it reads (and decompresses) a parquet *page* whole and copies its values
into the batch, so memory is about twice the largest page of each image column (three times
for a compressed page). Files written as 🤗 datasets writes them have a page per image; a
file written with pyarrow's default page settings has one page per row group and column.
A JSON manifest is parsed one record at a time (at most ``MAX_JSON_RECORD_CHARS`` each), never
loaded whole, and a record nested too deeply is refused like any malformed record. An HPD
image file's size is checked with ``stat`` before it is read.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db.ingest import MAX_IMAGES_PER_GENERATION
from media.intake import ImageTooLarge

PARQUET_BATCH_ROWS = 256  # at most, for small images
PARQUET_BATCH_BYTES = 32 * 2**20  # image bytes per read batch (at least one row)
PARQUET_READ_BUFFER = 2**20  # parquet reads go through a buffer this size, not a whole chunk
IMAGE_COLUMNS = ("jpg_0", "jpg_1")
JSON_READ_CHARS = 2**20
MAX_JSON_RECORD_CHARS = 16 * 2**20  # one HPD record (a prompt and a few paths) is far smaller
REQUIRED_PARQUET_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0", "label_1")
OPTIONAL_PARQUET_COLUMNS = (
    "ranking_id",
    "best_image_uid",
    "image_0_uid",
    "image_1_uid",
    "model_0",
    "model_1",
    "user_id",
    "created_at",
    "has_label",
    "generation_uid",
    "image_0_position",
    "image_1_position",
)


class ImportFormatError(ValueError):
    """A file or record that cannot be imported; the message names the file and record."""


@dataclass(frozen=True)
class ImageRef:
    """An image of a record: bytes in hand, a parquet cell (an Arrow buffer, not copied) or a
    file (HPD). ``key`` names it in messages and in generation keys."""

    key: str
    data: bytes | None = None
    path: Path | None = None
    cell: Any = None  # pyarrow.Buffer: a zero-copy view of a parquet cell

    @property
    def held_bytes(self) -> int:
        """Bytes this reference keeps in memory (a file's are read only when needed)."""
        if self.data is not None:
            return len(self.data)
        return 0 if self.cell is None else int(self.cell.size)

    def read(self, max_bytes: int) -> bytes:
        """The raw bytes, refusing oversized images before copying or reading them."""
        if self.data is not None:
            _check_size(len(self.data), max_bytes)
            return self.data
        if self.cell is not None:
            _check_size(int(self.cell.size), max_bytes)
            data: bytes = self.cell.to_pybytes()
            return data
        assert self.path is not None
        _check_size(self.path.stat().st_size, max_bytes)
        with self.path.open("rb") as handle:  # the file may have grown since stat()
            data = handle.read(max_bytes + 1)
        _check_size(len(data), max_bytes)
        return data


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ImageTooLarge(f"the file is {size:,} bytes; the limit is {max_bytes:,} bytes")


@dataclass(frozen=True)
class ImportRecord:
    """One choice to import."""

    where: str
    prompt: str
    images: tuple[ImageRef, ...]
    chosen_index: int | None
    generation_key: str
    user_key: str | None = None
    generator: str = "unknown"
    params: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


class RowNote(enum.Enum):
    """A progress unit that is not a record of its own."""

    UNLABELED = "unlabeled"  # a Pick-a-Pic row with has_label False: skipped
    CONTINUATION = "continuation"  # a further row of a multi-row choice


Entry = ImportRecord | ImportFormatError | RowNote


@dataclass
class Source:
    """An opened file: its format, its size in progress units, and its records."""

    path: Path
    format: str
    total: int
    unit: str
    _records: Iterator[Entry]

    def records(self) -> Iterator[Entry]:
        """Records in file order; an ImportFormatError in place of a malformed record (the
        caller raises it or skips it); a RowNote for a unit that is not a record of its own."""
        return self._records


def open_source(
    path: Path,
    fmt: str = "auto",
    image_root: Path | None = None,
    *,
    max_image_bytes: int | None = None,
) -> Source:
    """Open a manifest: ``pickapic`` (parquet), ``hpd`` (JSON) or ``auto`` (by suffix).

    With ``max_image_bytes``, a parquet image cell larger than that refuses its record before
    its bytes are hashed or copied (HPD image files are checked when they are read)."""
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    if fmt == "auto":
        fmt = "pickapic" if path.suffix == ".parquet" else "hpd" if path.suffix == ".json" else ""
        if not fmt:
            raise ImportFormatError(f"{path}: unknown format (use .parquet or .json, or --format)")
    if fmt == "pickapic":
        return _open_pickapic(path, max_image_bytes)
    if fmt == "hpd":
        return _open_hpd(path, image_root or path.parent)
    raise ImportFormatError(f"unknown format {fmt!r} (use pickapic, hpd or auto)")


# --- HPD JSON ---------------------------------------------------------------------------


def _open_hpd(path: Path, root: Path) -> Source:
    # A first pass checks the whole file and counts its records (nothing is written for a
    # file that is not valid JSON); the second yields them. Neither holds more than a record.
    total = sum(1 for _ in _json_list(path))
    root = root.resolve()
    records = (
        _hpd_record(path, number, record, root)
        for number, record in enumerate(_json_list(path), start=1)
    )
    return Source(path, "hpd", total, "records", records)


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_TAIL = 64  # a parse that ends this close to the end of the buffer may be cut short


class _JsonList:
    """The items of a top-level JSON list, parsed one at a time from a text stream.

    ``json.JSONDecoder.raw_decode`` parses each item from a buffer that holds at most one
    item plus one read; an item cut by the end of the buffer is parsed again after the next
    read (reads double while one item is incomplete, so a large item costs O(size))."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.decoder = json.JSONDecoder()
        self.buffer = ""
        self.pos = 0
        self.consumed = 0  # characters dropped from the front of the buffer
        self.eof = False
        self.number = 0

    def fail(self, what: str, at: int | None = None) -> ImportFormatError:
        where = "" if at is None else f" character {self.consumed + at:,}"
        where = where if what.endswith(" at") or not where else f" at{where}"
        return ImportFormatError(f"{self.path}: not valid JSON ({what}{where})")

    def read_more(self, handle: Any) -> None:
        if self.pos:
            self.consumed += self.pos
            self.buffer = self.buffer[self.pos :]
            self.pos = 0
        try:
            chunk = handle.read(max(JSON_READ_CHARS, len(self.buffer)))
        except UnicodeDecodeError as exc:
            raise ImportFormatError(f"{self.path}: not UTF-8 text ({exc})") from None
        if chunk:
            self.buffer += chunk
        else:
            self.eof = True

    def skip_space(self, handle: Any) -> str:
        """The next non-space character ('' at the end of the file)."""
        while True:
            match = _WHITESPACE.match(self.buffer, self.pos)
            assert match is not None
            self.pos = match.end()
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if self.eof:
                return ""
            self.read_more(handle)

    def item(self, handle: Any) -> Any:
        """The next item. Parsed again after a read while it may be cut by the end of the
        buffer: a parse error or a value close to the end (``1.5e`` parses as ``1.5``)."""
        self.number += 1
        self.skip_space(handle)
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except RecursionError:
                raise ImportFormatError(
                    f"{self.path}: record {self.number} is nested too deeply"
                ) from None
            except json.JSONDecodeError as exc:
                cut = exc.pos >= len(self.buffer) - _TAIL or exc.msg.startswith("Unterminated")
                if self.eof or not cut:
                    raise self.fail(exc.msg, exc.pos) from None
            except ValueError as exc:  # e.g. an integer with more digits than Python allows
                raise ImportFormatError(
                    f"{self.path}: record {self.number}: {' '.join(str(exc).split())}"
                ) from None
            else:
                match = _WHITESPACE.match(self.buffer, end)
                assert match is not None
                after = match.end()
                if self.eof or (
                    after < len(self.buffer)
                    and (self.buffer[after] in ",]" or after < len(self.buffer) - _TAIL)
                ):
                    self.pos = end
                    return value
            if len(self.buffer) - self.pos > MAX_JSON_RECORD_CHARS:
                raise ImportFormatError(
                    f"{self.path}: record {self.number} is longer than "
                    f"{MAX_JSON_RECORD_CHARS:,} characters"
                )
            self.read_more(handle)

    def __iter__(self) -> Iterator[Any]:
        try:
            handle = self.path.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise ImportFormatError(f"{self.path}: unreadable ({exc.strerror or exc})") from None
        with handle:
            if self.skip_space(handle) != "[":
                raise ImportFormatError(f"{self.path}: expected a JSON list of records")
            self.pos += 1
            if self.skip_space(handle) == "]":
                self.pos += 1
            else:
                while True:
                    yield self.item(handle)
                    following = self.skip_space(handle)
                    self.pos += 1
                    if following == "]":
                        break
                    if following != ",":
                        raise self.fail("expected ',' or ']' after a record", self.pos - 1)
            if self.skip_space(handle):
                raise self.fail("extra data after the list", self.pos)


def _json_list(path: Path) -> Iterator[Any]:
    return iter(_JsonList(path))


def _describe(path: Path, number: int, record: Any) -> str:
    where = f"{path.name}: record {number}"
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if isinstance(prompt, str) and prompt:
        where += f" (prompt {prompt[:40]!r})"
    return where


def _hpd_record(path: Path, number: int, record: Any, root: Path) -> Entry:
    where = _describe(path, number, record)
    try:
        return _parse_hpd(where, record, root)
    except ImportFormatError as exc:
        return exc
    except (KeyError, TypeError, ValueError) as exc:
        return ImportFormatError(f"{where}: {exc}")


def _parse_hpd(where: str, record: Any, root: Path) -> ImportRecord:
    if not isinstance(record, dict):
        raise ImportFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ImportFormatError(f"{where}: 'prompt' must be a non-empty string")
    key = "file_path" if "file_path" in record else "image_path"
    paths = record.get(key)
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ImportFormatError(f"{where}: 'file_path' or 'image_path' must be a list of paths")
    _check_set_size(where, len(paths))
    images = tuple(_hpd_image(where, root, relative) for relative in paths)
    chosen = _hpd_choice(where, record, len(paths))
    generation_uid = record.get("generation_uid")
    generation_key = (
        generation_uid
        if isinstance(generation_uid, str) and generation_uid
        else "\x1f".join([prompt, *paths])
    )
    user = record.get("user_id")
    generator = record.get("generator")
    return ImportRecord(
        where=where,
        prompt=prompt,
        images=images,
        chosen_index=chosen,
        generation_key=generation_key,
        user_key=None if user is None or isinstance(user, bool) else str(user),
        generator=generator if isinstance(generator, str) and generator else "unknown",
        created_at=_timestamp(where, record.get("created_at")),
    )


def _check_set_size(where: str, size: int) -> None:
    if not 2 <= size <= MAX_IMAGES_PER_GENERATION:
        raise ImportFormatError(
            f"{where}: a choice needs 2 to {MAX_IMAGES_PER_GENERATION} images, got {size}"
        )


def _hpd_image(where: str, root: Path, relative: str) -> ImageRef:
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise ImportFormatError(f"{where}: image path {relative!r} leaves the folder {root}")
    if not candidate.is_file():
        raise ImportFormatError(f"{where}: image file {relative!r} not found under {root}")
    return ImageRef(key=relative, path=candidate)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hpd_choice(where: str, record: dict[str, Any], size: int) -> int | None:
    preference = record.get("human_preference")
    ranks = record.get("rank")
    if isinstance(preference, int) and not isinstance(preference, bool):  # v1: an index
        if not 0 <= preference < size:
            raise ImportFormatError(
                f"{where}: human_preference {preference} is outside 0..{size - 1}"
            )
        return int(preference)
    if isinstance(preference, list):  # v2 train: 1 marks the preferred image(s)
        if len(preference) != size or not all(p in (0, 1) for p in preference):
            raise ImportFormatError(
                f"{where}: human_preference must be {size} values of 0 or 1, got {preference}"
            )
        winners = [i for i, p in enumerate(preference) if p == 1]
        if not winners:
            raise ImportFormatError(f"{where}: human_preference marks no image")
        return winners[0] if len(winners) == 1 else None
    if isinstance(ranks, list):  # v2 test: lower rank is better
        if len(ranks) != size or not all(_is_int(r) for r in ranks):
            raise ImportFormatError(f"{where}: rank must be {size} integers, got {ranks}")
        best = min(ranks)
        winners = [i for i, r in enumerate(ranks) if r == best]
        return winners[0] if len(winners) == 1 else None
    raise ImportFormatError(f"{where}: needs 'human_preference' (index or list) or 'rank'")


def _timestamp(where: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ImportFormatError(f"{where}: created_at {value!r} is not an ISO time") from None
    else:
        raise ImportFormatError(f"{where}: created_at must be an ISO time string")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --- Pick-a-Pic parquet -------------------------------------------------------------------


def _open_pickapic(path: Path, max_image_bytes: int | None) -> Source:
    import pyarrow.parquet as pq

    try:
        # No pre-buffering and a small read buffer: a row group is read a batch at a time,
        # not whole (pyarrow's defaults read every column chunk of it into memory at once).
        parquet = pq.ParquetFile(path, buffer_size=PARQUET_READ_BUFFER, pre_buffer=False)
    except Exception as exc:
        raise ImportFormatError(f"{path}: not a readable parquet file ({exc})") from None
    names = set(parquet.schema_arrow.names)
    missing = [column for column in REQUIRED_PARQUET_COLUMNS if column not in names]
    if missing:
        raise ImportFormatError(
            f"{path}: not a Pick-a-Pic file: missing column(s) {', '.join(missing)}"
        )
    columns = [*REQUIRED_PARQUET_COLUMNS, *(c for c in OPTIONAL_PARQUET_COLUMNS if c in names)]
    total = parquet.metadata.num_rows
    records = _PickapicEntries(path, parquet, columns, max_image_bytes)
    return Source(path, "pickapic", total, "rows", records)


@dataclass(frozen=True, slots=True)
class _Cell:
    """An image cell of a parquet row: its size, and its bytes as a zero-copy Arrow buffer
    (None for a null cell or a column that does not hold bytes)."""

    size: int
    buffer: Any


def _batch_rows(parquet: Any, row_group: int) -> int:
    """Rows per read batch in a row group: about ``PARQUET_BATCH_BYTES`` of images."""
    meta = parquet.metadata.row_group(row_group)
    rows = max(1, meta.num_rows)
    image_bytes = 0
    for index in range(meta.num_columns):
        column = meta.column(index)
        if column.path_in_schema in IMAGE_COLUMNS:
            image_bytes += max(column.total_uncompressed_size, column.total_compressed_size)
    per_row = max(1, image_bytes // rows)
    return max(1, min(PARQUET_BATCH_ROWS, PARQUET_BATCH_BYTES // per_row))


def _cells(array: Any) -> list[_Cell | None]:
    """The cells of a binary column without copying them: sizes from the offsets."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        if not (pa.types.is_fixed_size_binary(kind) or pa.types.is_binary_view(kind)):
            return [_Cell(0, None)] * len(array)  # not image bytes: refused when parsed
        try:
            array = array.cast(pa.large_binary())  # rare layouts: one copy of this batch
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return [_Cell(0, None)] * len(array)
    sizes = pc.binary_length(array).to_pylist()
    offsets, data = array.buffers()[1], array.buffers()[2]
    layout = "=qq" if pa.types.is_large_binary(array.type) else "=ii"
    width = struct.calcsize(layout) // 2
    cells: list[_Cell | None] = []
    for index, size in enumerate(sizes):
        if size is None:
            cells.append(None)
            continue
        start, _end = struct.unpack_from(layout, offsets, (array.offset + index) * width)
        cells.append(_Cell(size, data.slice(start, size) if data is not None else None))
    return cells


def _scalar_rows(path: Path, columns: list[str]) -> Iterator[dict[str, Any]]:
    """The small columns of every row, in file order (a reader of their own)."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path, buffer_size=PARQUET_READ_BUFFER, pre_buffer=False)
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        yield from batch.to_pylist()


class _ImageRows:
    """The image cells of every row, in file order, read in batches of about
    ``PARQUET_BATCH_BYTES``. A cell is handed over, not kept: once the caller drops a row,
    nothing here holds its bytes, and a batch is released before the next one is read."""

    def __init__(self, parquet: Any) -> None:
        self.parquet = parquet
        self.row_group = 0
        self.batches: Iterator[Any] | None = None
        self.cells: list[list[_Cell | None]] = []
        self.index = 0

    def next_row(self) -> dict[str, _Cell | None] | None:
        """The next row's cells, None after the last row."""
        while not self.cells or self.index >= len(self.cells[0]):
            self.cells = []
            batch = self._next_batch()
            if batch is None:
                return None
            self.cells = [_cells(batch.column(name)) for name in IMAGE_COLUMNS]
            self.index = 0
        row: dict[str, _Cell | None] = {}
        for column, name in zip(self.cells, IMAGE_COLUMNS, strict=True):
            row[name], column[self.index] = column[self.index], None
        self.index += 1
        return row

    def _next_batch(self) -> Any:
        while True:
            if self.batches is None:
                if self.row_group >= self.parquet.metadata.num_row_groups:
                    return None
                self.batches = self.parquet.iter_batches(
                    batch_size=_batch_rows(self.parquet, self.row_group),
                    row_groups=[self.row_group],
                    columns=list(IMAGE_COLUMNS),
                    use_threads=False,
                )
                self.row_group += 1
            batch = next(self.batches, None)
            if batch is not None:
                return batch
            self.batches = None


class _PickapicEntries:
    """The entries of a Pick-a-Pic file, one choice at a time.

    An iterator object rather than a generator, so that nothing here keeps a choice's image
    cells once it is handed over (a suspended generator would hold them in its frame while
    the caller imports the choice and reads on). The small columns are read ahead of the
    images, so a choice is complete, and handed over, before the next row's images are read.
    """

    def __init__(
        self, path: Path, parquet: Any, columns: list[str], max_image_bytes: int | None
    ) -> None:
        self.path = path
        self.max_image_bytes = max_image_bytes
        self.scalars = _scalar_rows(path, [c for c in columns if c not in IMAGE_COLUMNS])
        self.following: dict[str, Any] | None = None
        self.started = False
        self.images = _ImageRows(parquet)
        self.number = 0
        self.pending: deque[Entry] = deque()

    def __iter__(self) -> _PickapicEntries:
        return self

    def __next__(self) -> Entry:
        while not self.pending:
            self.pending.extend(_pickapic_group(self.path, self._group(), self.max_image_bytes))
        return self.pending.popleft()

    def _group(self) -> list[tuple[int, dict[str, Any]]]:
        """The rows of the next choice (consecutive rows of one ranking_id)."""
        if not self.started:
            self.following, self.started = next(self.scalars, None), True
        group: list[tuple[int, dict[str, Any]]] = []
        while True:
            images = self.images.next_row()
            if images is None:
                if group:
                    return group
                raise StopIteration
            self.number += 1
            if self.following is None:
                raise ImportFormatError(f"{self.path.name}: row {self.number}: columns end early")
            row = {**self.following, **images}  # new: the scalar batch must not keep cells
            self.following = next(self.scalars, None)
            group.append((self.number, row))
            if self.following is None or not _same_ranking(row, self.following):
                return group


def _same_ranking(previous: dict[str, Any], row: dict[str, Any]) -> bool:
    ranking = row.get("ranking_id")
    return (
        ranking is not None
        and ranking == previous.get("ranking_id")
        and row.get("generation_uid") == previous.get("generation_uid")
    )


def _pickapic_group(
    path: Path, group: list[tuple[int, dict[str, Any]]], max_image_bytes: int | None
) -> list[Entry]:
    """One record (or error) for a choice's rows; its other rows count as progress only."""
    first, last = group[0][0], group[-1][0]
    where = f"{path.name}: row {first}" if first == last else f"{path.name}: rows {first}-{last}"
    if group[0][1].get("ranking_id") is not None:
        where += f" (ranking_id {group[0][1]['ranking_id']})"
    labeled = [(n, row) for n, row in group if row.get("has_label") is not False]
    entries: list[Entry] = [RowNote.UNLABELED] * (len(group) - len(labeled))
    if not labeled:
        return entries
    record: Entry
    try:
        record = _parse_pickapic(where, labeled, max_image_bytes)
    except ImportFormatError as exc:
        # Without its traceback: the frames would keep the rows' image cells alive (a cycle
        # through this frame, freed only by a garbage collection).
        record = exc.with_traceback(None)
    except (KeyError, TypeError, ValueError) as exc:
        record = ImportFormatError(f"{where}: {exc}")
    return [*entries, *[RowNote.CONTINUATION] * (len(labeled) - 1), record]


_LABELS = {(1.0, 0.0): 0, (0.0, 1.0): 1, (0.5, 0.5): None}
_Slot = tuple[str, Any, str]  # an image of the set: uid, its bytes, the model that made it


def _parse_pickapic(
    where: str, rows: list[tuple[int, dict[str, Any]]], max_image_bytes: int | None
) -> ImportRecord:
    """The choice that the rows of one ranking make (ImportFormatError when they disagree)."""
    caption = rows[0][1].get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise ImportFormatError(f"{where}: 'caption' must be a non-empty string")
    use_positions = all(
        row.get("image_0_position") is not None and row.get("image_1_position") is not None
        for _, row in rows
    )
    slots: dict[Any, _Slot] = {}  # position or uid -> (uid, buffer, model)
    winners: set[str] = set()
    ties = 0
    for number, row in rows:
        at = f"{where}: row {number}" if len(rows) > 1 else where  # where names a single row
        if row.get("caption") != caption:
            raise ImportFormatError(f"{where}: row {number} has another caption")
        side = _pickapic_side(at, row)
        pair = [
            _add_pickapic_image(at, row, index, slots, use_positions, max_image_bytes)
            for index in (0, 1)
        ]
        if side is None:
            ties += 1
        else:
            winners.add(pair[side])
    if ties and winners:
        raise ImportFormatError(f"{where}: the rows mix ties and picks")
    if len(winners) > 1:
        raise ImportFormatError(f"{where}: the rows pick different images")
    ordered = _ordered_slots(where, slots, use_positions)
    return _pickapic_record(where, caption, rows[0][1], ordered, winners)


def _pickapic_side(at: str, row: dict[str, Any]) -> int | None:
    """Which image of the row's pair was preferred (0 or 1); None for a tie."""
    labels = (row.get("label_0"), row.get("label_1"))
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in labels):
        raise ImportFormatError(f"{at}: labels {labels} are not numbers")
    side = _LABELS.get((float(labels[0]), float(labels[1])), -1)  # type: ignore[arg-type]
    if side == -1:
        raise ImportFormatError(f"{at}: labels {labels} are not 1/0, 0/1 or 0.5/0.5")
    return side


def _add_pickapic_image(
    at: str,
    row: dict[str, Any],
    index: int,
    slots: dict[Any, _Slot],
    use_positions: bool,
    max_image_bytes: int | None,
) -> str:
    """Put the row's image ``index`` into its slot of the set; return its uid."""
    cell = row.get(f"jpg_{index}")
    if not isinstance(cell, _Cell) or cell.buffer is None or not cell.size:
        raise ImportFormatError(f"{at}: jpg_{index} holds no image bytes")
    if max_image_bytes is not None and cell.size > max_image_bytes:
        # Refused on its size alone: never hashed, decoded or copied.
        raise ImportFormatError(
            f"{at}: jpg_{index} refused: the image is "
            f"{cell.size:,} bytes; the limit is {max_image_bytes:,} bytes"
        )
    data = cell.buffer
    uid = row.get(f"image_{index}_uid") or hashlib.sha256(data).hexdigest()
    model = row.get(f"model_{index}") or "unknown"
    slot = row[f"image_{index}_position"] if use_positions else uid
    known = slots.get(slot)
    if known is not None and known[0] != str(uid):
        raise ImportFormatError(f"{at}: position {slot} holds two different images")
    slots.setdefault(slot, (str(uid), data, str(model)))
    return str(uid)


def _ordered_slots(where: str, slots: dict[Any, _Slot], use_positions: bool) -> list[_Slot]:
    """The set's images in their order: by position when every row gives one."""
    if not use_positions:
        return list(slots.values())
    positions = sorted(slots)
    if positions != list(range(len(positions))):
        raise ImportFormatError(f"{where}: image positions {positions} are not 0..n-1")
    return [slots[p] for p in positions]


def _pickapic_record(
    where: str,
    caption: str,
    first_row: dict[str, Any],
    ordered: list[_Slot],
    winners: set[str],
) -> ImportRecord:
    _check_set_size(where, len(ordered))
    uids = [uid for uid, _, _ in ordered]
    chosen = uids.index(next(iter(winners))) if winners else None
    models = [model for _, _, model in ordered]
    distinct_models = list(dict.fromkeys(models))
    generation_uid = first_row.get("generation_uid")
    user = first_row.get("user_id")
    return ImportRecord(
        where=where,
        prompt=caption,
        images=tuple(ImageRef(key=uid, cell=data) for uid, data, _ in ordered),
        chosen_index=chosen,
        generation_key=str(generation_uid) if generation_uid else "|".join(uids),
        user_key=None if user is None else str(user),
        generator=" vs ".join(distinct_models)[:128],
        params={"models": models} if len(distinct_models) > 1 else {},
        created_at=_timestamp(where, first_row.get("created_at")),
    )
