"""Builders of test data: images made in code, generations with their blobs stored."""

from __future__ import annotations

import io
import itertools
import random

from PIL import Image

from db.ingest import GenerationIn, ImageIn
from media.intake import encode_canonical
from media.store import ImageStore, key_for
from tests.hps.datasets import planted_image

_message_ids = itertools.count(1_100_000_000_000_000_000)


def next_message_id() -> int:
    """A fresh snowflake-sized id."""
    return next(_message_ids)


def solid_png(color: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> bytes:
    """PNG bytes of a single-colour image."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def noise_image(seed: int, size: tuple[int, int] = (32, 32)) -> Image.Image:
    """A reproducible random RGB image."""
    rng = random.Random(seed)
    return Image.frombytes(
        "RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
    )


def stored_image(store: ImageStore | None, image: Image.Image, seed: int | None = None) -> ImageIn:
    """Encode ``image`` as the intake does, put it in ``store`` (if given), describe it for
    ingest."""
    result = encode_canonical(image)
    if store is not None:
        store.put(result.data, result.sha256)
    return ImageIn(
        sha256=result.sha256,
        storage_key=key_for(result.sha256),
        width=result.width,
        height=result.height,
        phash=result.phash,
        seed=seed,
    )


def stored_images(store: ImageStore | None, seeds: list[int]) -> list[ImageIn]:
    """Encode noise images, put them in ``store`` (if given), describe them for ingest."""
    return [stored_image(store, noise_image(seed), seed) for seed in seeds]


def stored_planted_set(
    store: ImageStore, rng: random.Random, preferred: int, size: int = 4
) -> list[ImageIn]:
    """``size`` planted images (tests.hps.datasets), drawn from ``rng`` in order and stored;
    the one at ``preferred`` carries the red disc every simulated voter picks."""
    return [stored_image(store, planted_image(rng, index == preferred)) for index in range(size)]


def make_generation(
    *,
    requester_id: int | None = 42,
    prompt: str = "a red fox in the snow",
    seeds: list[int] | None = None,
    store: ImageStore | None = None,
    message_id: int | None = None,
    guild_id: int | None = 7,
    channel_id: int = 99,
) -> GenerationIn:
    """A four-image generation with fresh ids."""
    return GenerationIn(
        source_message_id=message_id or next_message_id(),
        channel_id=channel_id,
        guild_id=guild_id,
        prompt=prompt,
        generator="test-generator",
        images=stored_images(store, seeds if seeds is not None else [1, 2, 3, 4]),
        requester_id=requester_id,
        params={"steps": 25},
    )
