"""Preference data sets from the manifests people actually have.

- HPD v1 JSON (HPS v1 release): a list of ``{"prompt", "file_path": [...], "human_preference":
  <index of the chosen image>}``.
- HPD v2 JSON: a list of ``{"prompt", "image_path": [...], "human_preference": [0/1 per
  image]}`` (train) or ``{"prompt", "image_path": [...], "rank": [...]}`` (test; lower is
  better).
- Pick-a-Pic parquet rows: ``caption``, ``jpg_0``/``jpg_1`` (image bytes), ``label_0``/
  ``label_1`` (1/0, or 0.5/0.5 for a tie, kept as a soft label).
- The project's own export, JSON lines: ``{"prompt", "images": [...], "chosen_index"}``
  (optional ``"target"`` soft label and ``"split"``).

Relative image paths are resolved against the manifest's folder (or ``image_root``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hps.preprocess import ImageSource


class ManifestError(ValueError):
    """The manifest cannot be read; the message names the file and the record."""


@dataclass(frozen=True)
class PreferenceSet:
    """One prompt, its images, and the human preference among them.

    ``target`` is the probability of each image being the preferred one (a pick is one-hot,
    a tie is uniform over the tied images). ``ranks`` (lower is better) is kept when the source
    ranks all images, for the pairwise protocol of HPD v2.
    """

    prompt: str
    images: tuple[ImageSource, ...]
    target: tuple[float, ...]
    ranks: tuple[int, ...] | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if len(self.images) < 2:
            raise ValueError("a preference set needs at least two images")
        if len(self.target) != len(self.images):
            raise ValueError("target and images differ in length")
        total = sum(self.target)
        if total <= 0:
            raise ValueError("target has no preferred image")
        if abs(total - 1.0) > 1e-6:
            object.__setattr__(self, "target", tuple(t / total for t in self.target))

    @property
    def chosen_index(self) -> int:
        """The (first) most preferred image."""
        return max(range(len(self.target)), key=self.target.__getitem__)

    @property
    def is_tie(self) -> bool:
        """True when no single image is preferred."""
        best = max(self.target)
        return sum(1 for t in self.target if abs(t - best) < 1e-9) > 1


def one_hot(index: int, size: int) -> tuple[float, ...]:
    """A pick as a target distribution."""
    if not 0 <= index < size:
        raise ValueError(f"chosen index {index} outside 0..{size - 1}")
    return tuple(1.0 if i == index else 0.0 for i in range(size))


def load_manifest(path: str | Path, image_root: str | Path | None = None) -> list[PreferenceSet]:
    """Read a manifest of any supported format (detected from the suffix and content)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest")
    if path.suffix == ".parquet":
        return _load_pick_a_pic(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = [
            _parse_json_line(path, number, line)
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        ]
        return [_from_export(path, n, r, root) for n, r in enumerate(records, start=1)]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ManifestError(f"{path}: expected a JSON list of records")
    return [_from_hpd(path, n, record, root) for n, record in enumerate(data, start=1)]


def _parse_json_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{number}: not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ManifestError(f"{path}:{number}: expected a JSON object")
    return record


def _resolve(root: Path, items: Iterable[str]) -> tuple[ImageSource, ...]:
    return tuple(str(p if Path(p).is_absolute() else root / p) for p in items)


def _from_export(path: Path, number: int, record: dict[str, Any], root: Path) -> PreferenceSet:
    try:
        images = _resolve(root, record["images"])
        target = record.get("target") or one_hot(int(record["chosen_index"]), len(images))
        return PreferenceSet(
            str(record["prompt"]), images, tuple(target), split=record.get("split")
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path}:{number}: bad record ({exc!r})") from None


def _from_hpd(path: Path, number: int, record: Any, root: Path) -> PreferenceSet:
    try:
        prompt = str(record["prompt"])
        paths: Sequence[str] = record.get("file_path") or record["image_path"]
        images = _resolve(root, paths)
        preference = record.get("human_preference")
        ranks = record.get("rank")
        if isinstance(preference, int):  # HPD v1: index of the chosen image
            return PreferenceSet(prompt, images, one_hot(preference, len(images)))
        if isinstance(preference, list):  # HPD v2 train: 1 marks the preferred image(s)
            return PreferenceSet(prompt, images, tuple(float(p) for p in preference))
        if isinstance(ranks, list):  # HPD v2 test: ranks, lower is better
            ranks_t = tuple(int(r) for r in ranks)
            best = min(ranks_t)
            target = tuple(1.0 if r == best else 0.0 for r in ranks_t)
            return PreferenceSet(prompt, images, target, ranks=ranks_t)
        raise KeyError("human_preference or rank")
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: record {number}: bad record ({exc!r})") from None


def _load_pick_a_pic(path: Path) -> list[PreferenceSet]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["caption", "jpg_0", "jpg_1", "label_0", "label_1"])
    except Exception as exc:
        raise ManifestError(f"{path}: not a Pick-a-Pic parquet file ({exc})") from None
    sets = []
    for number, row in enumerate(table.to_pylist(), start=1):
        labels = (float(row["label_0"]), float(row["label_1"]))
        if sum(labels) <= 0:
            raise ManifestError(f"{path}: row {number}: both labels are 0")
        sets.append(PreferenceSet(str(row["caption"]), (row["jpg_0"], row["jpg_1"]), labels))
    return sets
