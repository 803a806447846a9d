"""CLIP models in Hugging Face ``transformers`` format (PickScore v1), scored through the
project's normal path.

PickScore's reference scoring is ``logit_scale.exp() * cos(text, image)`` with a
``CLIPProcessor`` (shortest side resized bicubic, centre crop, CLIP mean/std; the CLIP BPE
tokenizer, padding and truncation to 77 tokens). Here:

- :class:`HfClipModel` is a ``transformers.CLIPModel`` (same tensor names, so a Hugging Face
  ``model.safetensors`` loads into it as is) with the two methods the scorer calls,
  ``encode_image`` and ``encode_text``.
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

from hps.pixels import DEFAULT_MAX_PIXELS, ImageSource, load_image

if TYPE_CHECKING:
    import torch

ImageBackend = Literal["pil", "torchvision"]
IMAGE_BACKENDS: tuple[ImageBackend, ...] = ("pil", "torchvision")
EOS_TOKEN = "<|endoftext|>"
EOS_TOKEN_ID = 49407  # its id in the CLIP BPE vocabulary (the last of 49,408)
# Fields of a Hugging Face CLIP config that change what the weights compute; a folder's
# config.json must agree with the registered architecture on each ("" = top level).
STRUCTURAL_FIELDS = {
    "text_config": (
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_hidden_layers",
        "max_position_embeddings",
        "vocab_size",
        "hidden_act",
        "layer_norm_eps",
    ),
    "vision_config": (
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_hidden_layers",
        "image_size",
        "patch_size",
        "hidden_act",
        "layer_norm_eps",
    ),
    "": ("projection_dim",),
}


def _hf_model_class() -> type:
    from transformers import CLIPModel

    class HfClipModel(CLIPModel):
        """A ``transformers`` CLIPModel with the scorer's interface."""

        def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            """Projected image features of CLIP-normalised ``pixels`` (N, 3, S, S)."""
            return _features(self.get_image_features(pixel_values=pixels), normalize)

        def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            """Projected text features of token ids padded after the end-of-text token."""
            mask = attention_mask(tokens, EOS_TOKEN_ID)
            return _features(
                self.get_text_features(input_ids=tokens, attention_mask=mask), normalize
            )

    return HfClipModel


HfClipModelClass = cache(_hf_model_class)


def _features(output: Any, normalize: bool) -> torch.Tensor:
    """The projected features (transformers 4 returns a tensor, 5 an output object)."""
    import torch

    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    if normalize:
        features = features / features.norm(dim=-1, keepdim=True)
    return features


def attention_mask(tokens: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 up to and including each row's first end-of-text token, 0 on the padding after it
    (the tokenizer pads with the end-of-text token, as the reference processor does)."""
    is_eos = (tokens == eos_token_id).int()
    return ((is_eos.cumsum(dim=1) - is_eos) == 0).long()


def build_hf_clip(config: dict[str, Any]) -> torch.nn.Module:
    """A randomly initialised CLIP of this Hugging Face ``CLIPConfig`` (fp32, CPU, eval mode)."""
    from transformers import CLIPConfig

    clip_config = CLIPConfig(**config)
    model = HfClipModelClass()(clip_config)
    return model.eval()


def check_hf_config(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Where a checkpoint's ``config.json`` (``found``) differs from the registered config on
    a field that changes the computation, each as ``"section.field found (expected ...)"``;
    fields a config leaves out take ``transformers``' defaults, as when it is loaded."""
    from transformers import CLIPConfig

    try:
        have = CLIPConfig(**found)
    except Exception as exc:  # transformers raises several types for a bad config
        return [f"not a CLIP config ({exc})"]
    want = CLIPConfig(**expected)
    differences = []
    for section, fields in STRUCTURAL_FIELDS.items():
        have_part = getattr(have, section) if section else have
        want_part = getattr(want, section) if section else want
        for name in fields:
            value, wanted = getattr(have_part, name), getattr(want_part, name)
            if value != wanted:
                label = f"{section}.{name}" if section else name
                differences.append(f"{label} {value!r} (expected {wanted!r})")
    return differences


def score_scale_of(model: torch.nn.Module) -> float:
    """PickScore's scale: ``logit_scale.exp()`` of the loaded weights."""
    return float(model.logit_scale.detach().float().exp())  # type: ignore[operator]


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
