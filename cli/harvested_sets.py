"""Image sets for ``hps adapt --source harvested``: read with ``exchange``'s readers from this
platform's export folder (its HPD v1 manifests, else its Pick-a-Pic parquet files) or from one
HPD / Pick-a-Pic manifest, and handed to ``hps.diffusion`` as plain images (decoded when the
selection reads them) and prompts.

Records of the same generation (one per person's pick) make one set: its images once, every
pick kept. In an export folder the ``test`` split is held out: its sets never train, and its
prompts are the evaluation's when no ``--eval-prompts`` are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exchange.readers import ImportRecord
    from hps.diffusion.harvested import ImageSet

MAX_IMAGE_BYTES = 32 * 2**20
TEST_SPLIT = "test"


@dataclass
class _Gathered:
    prompt: str
    records: list[ImportRecord] = field(default_factory=list)
    picked: list[int] = field(default_factory=list)


@dataclass
class HarvestedSets:
    """What a harvested source holds: the sets that may train, the held-out prompts, and how
    many sets were too small to use (never decoded)."""

    train: list[ImageSet]
    held_out_prompts: list[str]
    skipped_small: int = 0


def manifests_of(path: Path) -> list[Path]:
    """The manifests to read: ``path`` itself, or an export folder's HPD v1 JSON files (else
    its parquet files)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such export folder or manifest")
    found = sorted((path / "hpd").glob("v1_*.json")) or sorted(path.rglob("*.parquet"))
    if not found:
        raise ValueError(f"{path}: no HPD v1 manifest (hpd/v1_*.json) nor parquet file")
    return found


def split_of(manifest: Path) -> str:
    """``test`` for a test-split manifest of an export (``v1_test.json``, ``test-*.parquet``)."""
    name = manifest.name
    return TEST_SPLIT if name.startswith(("v1_test", "v2_test", "test-")) else "train"


def _gather(manifest: Path, groups: dict[str, _Gathered]) -> None:
    from exchange.readers import ImportFormatError, ImportRecord, open_source

    for entry in open_source(manifest, max_image_bytes=MAX_IMAGE_BYTES).records():
        if isinstance(entry, ImportFormatError):
            raise entry
        if not isinstance(entry, ImportRecord):
            continue
        group = groups.setdefault(entry.generation_key, _Gathered(entry.prompt))
        if not group.records:
            group.records.append(entry)
        if entry.chosen_index is not None:
            group.picked.append(entry.chosen_index)


def _image_set(group: _Gathered) -> ImageSet:
    from hps.diffusion.harvested import ImageSet, LazyImages
    from hps.pixels import load_image

    refs = group.records[0].images
    images = LazyImages(len(refs), lambda index: load_image(refs[index].read(MAX_IMAGE_BYTES)))
    return ImageSet(group.prompt, images, tuple(group.picked))


def read_harvested(path: Path, min_images: int) -> HarvestedSets:
    """The image sets of an export folder or manifest with ``min_images``+ images, the test
    split's held out."""
    train: dict[str, _Gathered] = {}
    test: dict[str, _Gathered] = {}
    for manifest in manifests_of(path):
        _gather(manifest, test if split_of(manifest) == TEST_SPLIT else train)
    held_out = list(dict.fromkeys(group.prompt for group in test.values()))
    usable = [g for g in train.values() if len(g.records[0].images) >= min_images]
    return HarvestedSets([_image_set(g) for g in usable], held_out, len(train) - len(usable))
