"""The toy generator's corpus: captioned pictures of one shape (its colour, size, texture and
background named in the caption), drawn deterministically from a seed, and the measurements
that check a picture against its caption (dominant hue, shape).

Some colour+shape pairs never appear in the corpus (:data:`HELD_OUT_PAIRS`): a sample drawn
for one of them shows whether the generator composes what it learnt rather than recalls it.
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass
from functools import cache

import numpy as np

IMAGE_SIZE = 32
SUPERSAMPLE = 4  # shapes are drawn at 4x and averaged down: smooth edges

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 25),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "purple": (145, 45, 195),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, tuple[float, float]] = {"small": (0.14, 0.18), "large": (0.30, 0.36)}
TEXTURES = ("plain", "striped")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (12, 12, 12),
    "gray": (128, 128, 128),
}
# Every colour and every shape is seen, but not these pairs together.
HELD_OUT_PAIRS = frozenset(
    {
        ("red", "triangle"),
        ("orange", "square"),
        ("yellow", "circle"),
        ("green", "triangle"),
        ("blue", "square"),
        ("purple", "circle"),
    }
)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    size: str
    texture: str
    background: str

    @property
    def caption(self) -> str:
        texture = "striped " if self.texture == "striped" else ""
        return (
            f"a {self.size} {self.colour} {texture}{self.shape} on a {self.background} background"
        )


def scenes(*, held_out: bool) -> list[Scene]:
    """Every scene of the corpus (``held_out=False``) or every held-out one (``True``)."""
    return [
        Scene(colour, shape, size, texture, background)
        for colour in COLOURS
        for shape in SHAPES
        if ((colour, shape) in HELD_OUT_PAIRS) == held_out
        for size in SIZES
        for texture in TEXTURES
        for background in BACKGROUNDS
    ]


def _shape_mask(shape: str, cx: float, cy: float, radius: float, grid: np.ndarray) -> np.ndarray:
    ys, xs = grid
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    if shape == "square":
        half = radius * 0.85
        return (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    # An upright triangle: flat base at the bottom, apex at the top.
    top, bottom = cy - radius, cy + radius * 0.8
    height = bottom - top
    half_width = (ys - top) / height * radius * 1.1
    return (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= half_width)


@cache
def _pixel_centres(fine: int) -> np.ndarray:
    grid = np.mgrid[0:fine, 0:fine].astype(np.float32) + 0.5
    grid.setflags(write=False)
    return grid


def render(scene: Scene, rng: random.Random, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene as an RGB uint8 array (``size`` x ``size``); position, exact size and stripe
    phase are drawn from ``rng``."""
    fine = size * SUPERSAMPLE
    low, high = SIZES[scene.size]
    radius = rng.uniform(low, high) * fine
    margin = radius * 1.05
    cx, cy = rng.uniform(margin, fine - margin), rng.uniform(margin, fine - margin)
    grid = _pixel_centres(fine)
    mask = _shape_mask(scene.shape, cx, cy, radius, grid)
    colour = np.array(COLOURS[scene.colour], dtype=np.float32)
    canvas = np.empty((fine, fine, 3), dtype=np.float32)
    canvas[:] = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    if scene.texture == "striped":
        period = fine / 8
        stripes = ((grid[1] + grid[0] + rng.uniform(0, period)) // (period / 2)) % 2 == 0
        shade = np.where(stripes[..., None], colour, colour * 0.45)
        canvas[mask] = shade[mask]
    else:
        canvas[mask] = colour
    small = canvas.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def corpus(count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` pictures (uint8, N x H x W x 3) of training scenes and their captions."""
    rng = random.Random(seed)
    pool = scenes(held_out=False)
    chosen = [pool[rng.randrange(len(pool))] for _ in range(count)]
    images = np.stack([render(scene, rng) for scene in chosen])
    return images, [scene.caption for scene in chosen]


def sample_prompts(count: int, seed: int, *, held_out: bool = False) -> list[str]:
    """``count`` distinct captions of the corpus's scenes (``held_out``: of the held-out
    colour+shape pairs), in a seeded order: prompts the toy generator understands."""
    captions = sorted({scene.caption for scene in scenes(held_out=held_out)})
    if count > len(captions):
        raise ValueError(f"only {len(captions)} distinct captions, not {count}")
    random.Random(seed).shuffle(captions)
    return captions[:count]


def _hue_distance(a: float, b: float) -> float:
    gap = abs(a - b) % 1.0
    return min(gap, 1.0 - gap)


COLOUR_HUES = {
    name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in COLOURS.items()
}


def figure_mask(image: np.ndarray) -> np.ndarray:
    """The pixels of the figure: clearly coloured ones (the backgrounds are all grey)."""
    rgb = image.astype(np.float32) / 255
    value = rgb.max(axis=-1)
    saturation = (value - rgb.min(axis=-1)) / np.maximum(value, 1e-6)
    return (saturation > 0.35) & (value > 0.2)


def dominant_colour(image: np.ndarray) -> str | None:
    """The palette colour most of the figure's pixels are closest to in hue (None: no figure)."""
    mask = figure_mask(image)
    if mask.sum() < 4:
        return None
    votes = dict.fromkeys(COLOURS, 0)
    for r, g, b in image[mask].astype(np.float32) / 255:
        hue = colorsys.rgb_to_hsv(float(r), float(g), float(b))[0]
        nearest = min(COLOUR_HUES, key=lambda name: _hue_distance(hue, COLOUR_HUES[name]))
        votes[nearest] += 1
    return max(votes, key=lambda name: votes[name])


def dominant_shape(image: np.ndarray) -> str | None:
    """circle, square or triangle from how the figure fills its bounding box and how its
    width changes from top to bottom (None: no figure)."""
    mask = figure_mask(image)
    rows, cols = np.nonzero(mask)
    if len(rows) < 6:
        return None
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    box = mask[top : bottom + 1, left : right + 1]
    fill = box.mean()
    height = box.shape[0]
    upper, lower = box[: max(1, height // 3)].sum(), box[height - max(1, height // 3) :].sum()
    if fill < 0.65 or lower > 1.8 * upper:
        return "triangle"
    return "square" if fill > 0.88 else "circle"
