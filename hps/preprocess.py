"""Preprocessing for the model: geometry (``hps.pixels``) plus CLIP normalisation.

Geometry runs on the CPU (inline, or in decoding processes on a GPU host) and yields uint8;
normalisation with the CLIP mean/std runs batched on the model's device, so only bytes cross
to the GPU.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from hps.architectures import PreprocessMode
from hps.pixels import (
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    ImageSource,
    describe,
    load_image,
    resize_crop,
    resize_pad,
    shape_pixels,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_MAX_PIXELS",
    "ImageLoadError",
    "ImageSource",
    "describe",
    "load_image",
    "normalize",
    "resize_crop",
    "resize_pad",
    "shape_pixels",
    "stack_pixels",
    "to_uint8_tensor",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_uint8_tensor(image: Image.Image, size: int, mode: PreprocessMode) -> torch.Tensor:
    """Geometry only: a (3, size, size) uint8 tensor."""
    return torch.from_numpy(shape_pixels(image, size, mode).copy()).permute(2, 0, 1)


def stack_pixels(arrays: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays -> one contiguous (N, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def normalize(batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (N, 3, H, W) on any device -> CLIP-normalised floats of ``dtype``."""
    mean = torch.tensor(CLIP_MEAN, device=batch.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(CLIP_STD, device=batch.device).view(1, 3, 1, 1) * 255.0
    return ((batch.float() - mean) / std).to(dtype)
