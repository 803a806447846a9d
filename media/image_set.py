"""Intake of one generation's images: every image checked and normalised (a grid split into
its tiles) before any is stored, so a refusal stores nothing.

:func:`intake_and_store_set` is what an intake process runs: plain arguments in, plain
:class:`StoredImage` descriptions out (the image bytes stay in that process)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from media.intake import (
    IntakeResult,
    decode_image,
    encode_canonical,
    intake_image,
    split_grid,
    store_result,
)
from media.model_inputs import ModelInputSpec
from media.store import ImageStore, key_for, open_store


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One stored canonical image: its identity, where it lies, its size and perceptual hash."""

    sha256: str
    storage_key: str
    width: int
    height: int
    phash: str


def intake_set(
    raws: list[bytes],
    *,
    grid: bool,
    max_bytes: int,
    max_pixels: int,
    model_inputs: Sequence[ModelInputSpec] = (),
) -> list[IntakeResult]:
    """Check and normalise every image of one generation; a ``grid`` image becomes its tiles
    (top-left first), each with its ``model_inputs``. Raises
    :class:`media.intake.ImageRejected` for the first bad image."""
    results: list[IntakeResult] = []
    for raw in raws:
        if not grid:  # a plain RGB PNG keeps its pixel stream: no 17 ms re-encode per image
            results.append(
                intake_image(
                    raw, max_bytes=max_bytes, max_pixels=max_pixels, model_inputs=model_inputs
                )
            )
            continue
        decoded = decode_image(raw, max_bytes=max_bytes, max_pixels=max_pixels)
        results += [
            encode_canonical(tile, source_format=decoded.source_format, model_inputs=model_inputs)
            for tile in split_grid(decoded.image)
        ]
    return results


def store_set(results: list[IntakeResult], store: ImageStore) -> list[StoredImage]:
    """Store every image of a set that passed :func:`intake_set`, with its model inputs."""
    for result in results:
        store_result(result, store)
    return [StoredImage(r.sha256, key_for(r.sha256), r.width, r.height, r.phash) for r in results]


_stores: dict[tuple[str, str | None], ImageStore] = {}


def intake_and_store_set(
    raws: list[bytes],
    *,
    grid: bool,
    max_bytes: int,
    max_pixels: int,
    storage_url: str,
    s3_endpoint_url: str | None,
    model_inputs: Sequence[ModelInputSpec] = (),
) -> list[StoredImage]:
    """:func:`intake_set` then :func:`store_set`, all or nothing, in an intake process (it
    opens the store itself, once per process)."""
    results = intake_set(
        raws, grid=grid, max_bytes=max_bytes, max_pixels=max_pixels, model_inputs=model_inputs
    )
    key = (storage_url, s3_endpoint_url)
    if key not in _stores:
        _stores[key] = open_store(storage_url, s3_endpoint_url=s3_endpoint_url)
    return store_set(results, _stores[key])
