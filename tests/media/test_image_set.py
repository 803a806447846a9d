"""A generation's images are taken in all or nothing; a grid becomes its four tiles."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from media.image_set import intake_and_store_set, intake_set
from media.intake import CorruptImage, intake_image
from media.store import key_for

MAX_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 20_000_000


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_plain_set_is_taken_as_single_images() -> None:
    raws = [png((255, 0, 0)), png((0, 255, 0))]
    results = intake_set(raws, grid=False, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    singles = [intake_image(raw, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS) for raw in raws]
    assert results == singles


def test_a_grid_becomes_its_tiles_and_everything_is_stored(tmp_path: Path) -> None:
    grid = Image.new("RGB", (128, 128))
    for index, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        x, y = (index % 2) * 64, (index // 2) * 64
        grid.paste(color, (x, y, x + 64, y + 64))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    url = (tmp_path / "blobs").as_uri()
    stored = intake_and_store_set(
        [buffer.getvalue()],
        grid=True,
        max_bytes=MAX_BYTES,
        max_pixels=MAX_PIXELS,
        storage_url=url,
        s3_endpoint_url=None,
    )
    assert [(image.width, image.height) for image in stored] == [(64, 64)] * 4
    assert len({image.sha256 for image in stored}) == 4
    assert all(image.storage_key == key_for(image.sha256) for image in stored)
    assert len([p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]) == 4


def test_one_bad_image_stores_nothing(tmp_path: Path) -> None:
    url = (tmp_path / "blobs").as_uri()
    with pytest.raises(CorruptImage):
        intake_and_store_set(
            [png((1, 2, 3)), png((4, 5, 6))[:60]],
            grid=False,
            max_bytes=MAX_BYTES,
            max_pixels=MAX_PIXELS,
            storage_url=url,
            s3_endpoint_url=None,
        )
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
