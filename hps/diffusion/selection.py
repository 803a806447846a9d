"""The paper's selection of training images for adapting Stable Diffusion.

Per prompt with at least ``min_images`` images: take the softmax of the mean-subtracted HPS
scores; if the largest probability exceeds ``alpha / n`` the best image is a positive example.
The same rule on the negated scores picks one negative (the clearly worst image), which is
captioned "Weird image. " + prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

DEFAULT_ALPHA = 2.0
MIN_IMAGES = 4
NEGATIVE_CAPTION_PREFIX = "Weird image. "


@dataclass(frozen=True)
class Selection:
    positive: int | None
    negative: int | None


def softmax(values: Sequence[float]) -> list[float]:
    """Numerically stable softmax."""
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def select_examples(
    scores: Sequence[float], alpha: float = DEFAULT_ALPHA, min_images: int = MIN_IMAGES
) -> Selection:
    """Which image of one prompt is a positive and which a negative (either may be None)."""
    n = len(scores)
    if n < min_images:
        return Selection(None, None)
    mean = sum(scores) / n
    centred = [s - mean for s in scores]
    threshold = alpha / n

    def pick(values: list[float]) -> int | None:
        probabilities = softmax(values)
        best = max(range(n), key=probabilities.__getitem__)
        return best if probabilities[best] > threshold else None

    return Selection(pick(centred), pick([-c for c in centred]))


def sharpness(image: Image.Image) -> float:
    """Variance of the Laplacian of the grey image: low means blurry."""
    grey = image.convert("L").filter(
        ImageFilter.Kernel((3, 3), [0, 1, 0, 1, -4, 1, 0, 1, 0], scale=1, offset=128)
    )
    return float(np.asarray(grey, dtype=np.float32).var())


def is_blurry(image: Image.Image, threshold: float) -> bool:
    """True when the image's sharpness is below ``threshold`` (0 disables the filter)."""
    return threshold > 0 and sharpness(image) < threshold
