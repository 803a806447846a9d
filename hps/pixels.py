"""Image loading and geometry without torch (so decoding processes start light).

Two geometries: ``pad`` (the paper's: resize the longest side to the model resolution, zero-pad
to a square, image centred) and ``crop`` (CLIP's: resize the shortest side, centre-crop). Both
reproduce open_clip's eval transforms pixel for pixel. The geometry is :mod:`rules.geometry`,
which ``media.model_inputs`` also stores each image's model input with (one code, same bits).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from hps.architectures import PreprocessMode
from rules.geometry import resize_crop, resize_pad

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageLoadError",
    "ImageSource",
    "describe",
    "load_image",
    "resize_crop",
    "resize_pad",
    "shape_pixels",
]

DEFAULT_MAX_PIXELS = 64_000_000

ImageSource = str | os.PathLike[str] | bytes | Image.Image


class ImageLoadError(ValueError):
    """An image could not be read; the message names it."""


def describe(source: ImageSource) -> str:
    """A short name for an image source, for messages and results."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<image {source.width}x{source.height}>"


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image (path, bytes or PIL image) as RGB, first frame, under a pixel cap."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, bytes):
                image = Image.open(io.BytesIO(source))
            else:
                image = Image.open(Path(source))
            if image.width * image.height > max_pixels:
                raise ImageLoadError(
                    f"{describe(source)}: {image.width}x{image.height} exceeds "
                    f"{max_pixels:,} pixels"
                )
            image.seek(0)
            image.load()
            return image.convert("RGB")
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"{describe(source)}: no such file") from None
    except Exception as exc:  # Pillow raises many types for bad data
        raise ImageLoadError(f"{describe(source)}: cannot read image ({exc})") from None


def shape_pixels(
    source: ImageSource, size: int, mode: PreprocessMode, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Load and shape one image: a (size, size, 3) uint8 array."""
    image = load_image(source, max_pixels=max_pixels)
    if mode == "pad":
        shaped = resize_pad(image, size)
    elif mode == "crop":
        shaped = resize_crop(image, size)
    else:
        raise ValueError(f"preprocess must be 'pad' or 'crop', not {mode!r}")
    return np.asarray(shaped, dtype=np.uint8)
