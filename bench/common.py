"""What the benchmarks share: a synthetic picture and a timed measurement.

PIL is imported inside :func:`synthetic_png`: ``bench.import_memory`` measures the peak memory
of child processes that import this module, so it must stay light.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass


@dataclass
class Measurement:
    """``units`` of work (generations, rows, images) done in ``seconds``."""

    name: str
    units: int
    unit: str
    seconds: float

    @property
    def per_second(self) -> float:
        return self.units / self.seconds


def synthetic_png(seed: int, size: int = 512) -> bytes:
    """A PNG that compresses like a generated picture: smooth gradients, shapes, mild grain."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    tint = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    image = Image.blend(base, tint, 0.5)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(size), rng.randrange(size)
        r = rng.randrange(20, 120)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    image = image.filter(ImageFilter.GaussianBlur(3))
    grain = Image.effect_noise((size, size), 8).convert("RGB")
    image = Image.blend(image, grain, 0.08)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
