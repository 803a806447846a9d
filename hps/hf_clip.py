"""CLIP models in Hugging Face ``transformers`` format (PickScore v1), scored through the
project's normal path.

PickScore's reference scoring is ``logit_scale.exp() * cos(text, image)`` with a
``CLIPProcessor`` (shortest side resized bicubic, centre crop, CLIP mean/std; the CLIP BPE
tokenizer, padding and truncation to 77 tokens). Here:

- ``HfClipModel`` (:mod:`hps.architectures.hf`, so that the registry can build it) is a
  ``transformers.CLIPModel`` (same tensor names, so a Hugging Face ``model.safetensors``
  loads into it as is) with the two methods the scorer calls, ``encode_image`` and
  ``encode_text``.
- :class:`HfClipTokenizer` is a ``transformers.CLIPTokenizer`` built offline from open_clip's
  bundled BPE vocabulary (no download), called as the reference calls it.
- :func:`hf_shape_pixels` runs the ``transformers`` CLIP image processor itself for the
  geometry (resize and crop, in uint8) so that the scorer can keep normalising batches on the
  model's device; CLIP mean/std are the same as :mod:`hps.preprocess`'s.

Weights are read only from safetensors (:func:`hps.checkpoints.load_hf_checkpoint`); models
are built from the registered config, never fetched.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hps.architectures.hf import EOS_TOKEN_ID, HfClipModelClass, build_hf_clip
from hps.pixels import DEFAULT_MAX_PIXELS, ImageSource, load_image

__all__ = [
    "EOS_TOKEN_ID",
    "HfClipModelClass",
    "HfClipTokenizer",
    "build_hf_clip",
    "hf_shape_pixels",
    "image_processor",
    "image_processor_class",
    "offline_tokenizer",
]

if TYPE_CHECKING:
    import torch

ImageBackend = Literal["pil", "torchvision"]
IMAGE_BACKENDS: tuple[ImageBackend, ...] = ("pil", "torchvision")
EOS_TOKEN = "<|endoftext|>"


@cache
def offline_tokenizer() -> Any:
    """The CLIP BPE ``transformers.CLIPTokenizer`` (77 tokens), built from open_clip's
    vocabulary without the network (pad token = end-of-text, as in the PickScore processor)."""
    from hps.diffusion.tokenizer import offline_clip_tokenizer

    return offline_clip_tokenizer()


class HfClipTokenizer:
    """Prompts -> token ids as ``CLIPProcessor(text=..., padding=True, truncation=True,
    max_length=77)`` makes them (a tensor; the model derives the attention mask)."""

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length
        self.tokenizer = offline_tokenizer()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return encoded["input_ids"]


def image_processor_class(backend: str) -> type:
    """The ``transformers`` CLIP image processor class of ``backend`` (names differ between
    transformers 4, where the PIL one is the default, and 5, where torchvision's is)."""
    import transformers

    names = {
        "pil": ("CLIPImageProcessorPil", "CLIPImageProcessor"),
        "torchvision": ("CLIPImageProcessor", "CLIPImageProcessorFast"),
    }.get(backend)
    if names is None:
        raise ValueError(f"image backend must be one of {IMAGE_BACKENDS}, not {backend!r}")
    major = int(transformers.__version__.split(".")[0])
    name = names[0] if major >= 5 else names[1]
    return getattr(transformers, name)


@cache
def image_processor(size: int, backend: str) -> Any:
    """A CLIP image processor for ``size`` px: shortest side to ``size`` (bicubic), centre
    crop, CLIP mean/std (one per process)."""
    return image_processor_class(backend)(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=3,  # PILImageResampling.BICUBIC
        do_resize=True,
        do_center_crop=True,
    )


def hf_shape_pixels(
    source: ImageSource,
    size: int,
    backend: str = "pil",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Load one image and shape it as the ``transformers`` processor does (resize, crop; no
    rescale or normalisation): a (size, size, 3) uint8 array."""
    image = load_image(source, max_pixels=max_pixels)
    shaped = image_processor(size, backend)(
        images=image, do_rescale=False, do_normalize=False, return_tensors="np"
    )["pixel_values"][0]
    array = np.asarray(shaped)
    if array.shape[0] == 3:  # channels first
        array = array.transpose(1, 2, 0)
    return np.ascontiguousarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))
