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
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db.ingest import MAX_IMAGES_PER_GENERATION
from media.intake import ImageTooLarge

PARQUET_BATCH_ROWS = 256
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
    """An image of a record: bytes in hand (parquet) or a file (HPD). ``key`` names it in
    messages and in generation keys."""

    key: str
    data: bytes | None = None
    path: Path | None = None

    def read(self, max_bytes: int) -> bytes:
        """The raw bytes, refusing oversized files before reading them."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        size = self.path.stat().st_size
        if size > max_bytes:
            raise ImageTooLarge(f"the file is {size:,} bytes; the limit is {max_bytes:,} bytes")
        return self.path.read_bytes()


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


def open_source(path: Path, fmt: str = "auto", image_root: Path | None = None) -> Source:
    """Open a manifest: ``pickapic`` (parquet), ``hpd`` (JSON) or ``auto`` (by suffix)."""
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    if fmt == "auto":
        fmt = "pickapic" if path.suffix == ".parquet" else "hpd" if path.suffix == ".json" else ""
        if not fmt:
            raise ImportFormatError(f"{path}: unknown format (use .parquet or .json, or --format)")
    if fmt == "pickapic":
        return _open_pickapic(path)
    if fmt == "hpd":
        return _open_hpd(path, image_root or path.parent)
    raise ImportFormatError(f"unknown format {fmt!r} (use pickapic, hpd or auto)")


# --- HPD JSON ---------------------------------------------------------------------------


def _open_hpd(path: Path, root: Path) -> Source:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ImportFormatError(f"{path}: expected a JSON list of records")
    root = root.resolve()
    records = (
        _hpd_record(path, number, record, root) for number, record in enumerate(data, start=1)
    )
    return Source(path, "hpd", len(data), "records", records)


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


def _open_pickapic(path: Path) -> Source:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
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
    return Source(path, "pickapic", total, "rows", _pickapic_records(path, parquet, columns))


def _pickapic_rows(parquet: Any, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _pickapic_records(path: Path, parquet: Any, columns: list[str]) -> Iterator[Entry]:
    group: list[tuple[int, dict[str, Any]]] = []
    for number, row in _pickapic_rows(parquet, columns):
        if group and not _same_ranking(group[-1][1], row):
            yield from _pickapic_group(path, group)
            group = []
        group.append((number, row))
    if group:
        yield from _pickapic_group(path, group)


def _same_ranking(previous: dict[str, Any], row: dict[str, Any]) -> bool:
    ranking = row.get("ranking_id")
    return (
        ranking is not None
        and ranking == previous.get("ranking_id")
        and row.get("generation_uid") == previous.get("generation_uid")
    )


def _pickapic_group(path: Path, group: list[tuple[int, dict[str, Any]]]) -> Iterator[Entry]:
    first, last = group[0][0], group[-1][0]
    where = f"{path.name}: row {first}" if first == last else f"{path.name}: rows {first}-{last}"
    if group[0][1].get("ranking_id") is not None:
        where += f" (ranking_id {group[0][1]['ranking_id']})"
    labeled = [(n, row) for n, row in group if row.get("has_label") is not False]
    yield from [RowNote.UNLABELED] * (len(group) - len(labeled))
    if not labeled:
        return
    record: Entry
    try:
        record = _parse_pickapic(where, labeled)
    except ImportFormatError as exc:
        record = exc
    except (KeyError, TypeError, ValueError) as exc:
        record = ImportFormatError(f"{where}: {exc}")
    # One record (or error) for the whole group; the other rows count as progress only.
    yield from [RowNote.CONTINUATION] * (len(labeled) - 1)
    yield record


_LABELS = {(1.0, 0.0): 0, (0.0, 1.0): 1, (0.5, 0.5): None}


def _parse_pickapic(where: str, rows: list[tuple[int, dict[str, Any]]]) -> ImportRecord:
    caption = rows[0][1].get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise ImportFormatError(f"{where}: 'caption' must be a non-empty string")
    use_positions = all(
        row.get("image_0_position") is not None and row.get("image_1_position") is not None
        for _, row in rows
    )
    slots: dict[Any, tuple[str, bytes, str]] = {}  # position or uid -> (uid, bytes, model)
    winners: set[str] = set()
    ties = 0
    for number, row in rows:
        if row.get("caption") != caption:
            raise ImportFormatError(f"{where}: row {number} has another caption")
        labels = (row.get("label_0"), row.get("label_1"))
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in labels):
            raise ImportFormatError(f"{where}: row {number}: labels {labels} are not numbers")
        side = _LABELS.get((float(labels[0]), float(labels[1])), -1)  # type: ignore[arg-type]
        if side == -1:
            raise ImportFormatError(
                f"{where}: row {number}: labels {labels} are not 1/0, 0/1 or 0.5/0.5"
            )
        pair = []
        for index in (0, 1):
            data = row.get(f"jpg_{index}")
            if not isinstance(data, bytes) or not data:
                raise ImportFormatError(f"{where}: row {number}: jpg_{index} holds no image bytes")
            uid = row.get(f"image_{index}_uid") or hashlib.sha256(data).hexdigest()
            model = row.get(f"model_{index}") or "unknown"
            slot = row[f"image_{index}_position"] if use_positions else uid
            known = slots.get(slot)
            if known is not None and known[0] != str(uid):
                raise ImportFormatError(
                    f"{where}: row {number}: position {slot} holds two different images"
                )
            slots.setdefault(slot, (str(uid), data, str(model)))
            pair.append(str(uid))
        if side is None:
            ties += 1
        else:
            winners.add(pair[side])
    if ties and winners:
        raise ImportFormatError(f"{where}: the rows mix ties and picks")
    if len(winners) > 1:
        raise ImportFormatError(f"{where}: the rows pick different images")
    if use_positions:
        positions = sorted(slots)
        if positions != list(range(len(positions))):
            raise ImportFormatError(f"{where}: image positions {positions} are not 0..n-1")
        ordered = [slots[p] for p in positions]
    else:
        ordered = list(slots.values())
    _check_set_size(where, len(ordered))
    uids = [uid for uid, _, _ in ordered]
    chosen = uids.index(next(iter(winners))) if winners else None
    models = [model for _, _, model in ordered]
    distinct_models = list(dict.fromkeys(models))
    first_row = rows[0][1]
    generation_uid = first_row.get("generation_uid")
    user = first_row.get("user_id")
    return ImportRecord(
        where=where,
        prompt=caption,
        images=tuple(ImageRef(key=uid, data=data) for uid, data, _ in ordered),
        chosen_index=chosen,
        generation_key=str(generation_uid) if generation_uid else "|".join(uids),
        user_key=None if user is None else str(user),
        generator=" vs ".join(distinct_models)[:128],
        params={"models": models} if len(distinct_models) > 1 else {},
        created_at=_timestamp(where, first_row.get("created_at")),
    )
