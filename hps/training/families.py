"""What the trainer needs to know about a model family, behind one small interface.

The trainer has one code path (tokenise, shape pixels, forward, the paper's loss, AdamW,
schedule, checkpoints); only these differ between ``open_clip`` CLIPs and ``hf-clip``
(``transformers`` CLIPModel, e.g. PickScore):

- ``parts``: the blocks of each tower, in order, and the heads trained after them (the final
  norms and projections), so that "train the last N blocks" means the same in both;
- ``features``: L2-normalised (image, text) features from the model's ``forward`` (so that
  DistributedDataParallel sees the call);
- ``pixels``: the image geometry, the same as the scorer's (:class:`hps.scoring.HpsScorer`);
- ``grad_checkpointing``: how to turn activation checkpointing on.

Prompts are tokenised by :func:`hps.scoring.make_tokenizer`, the scorer's own tokenizer, so
that training and scoring see the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from hps.architectures import Architecture, Family, PreprocessMode
from hps.pixels import ImageSource, shape_pixels

__all__ = ["FamilyHooks", "TrainableParts", "family_hooks"]

PixelLoader = Callable[[ImageSource], np.ndarray]


@dataclass(frozen=True)
class TrainableParts:
    """A CLIP's blocks per tower (first to last) and the heads that follow them."""

    vision_blocks: Sequence[torch.nn.Module]
    text_blocks: Sequence[torch.nn.Module]
    heads: Sequence[torch.nn.Module | torch.nn.Parameter]


@dataclass(frozen=True)
class FamilyHooks:
    """The per-family pieces of training (see the module docstring)."""

    parts: Callable[[Any], TrainableParts]
    features: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], tuple[Any, Any]]
    pixels: Callable[[Architecture, PreprocessMode], PixelLoader]
    grad_checkpointing: Callable[[Any], None]


# -- open_clip -------------------------------------------------------------------------------


def _open_clip_parts(model: Any) -> TrainableParts:
    visual = model.visual
    heads: list[torch.nn.Module | torch.nn.Parameter] = [visual.ln_post, model.ln_final]
    heads += [
        value
        for value in (getattr(visual, "proj", None), getattr(model, "text_projection", None))
        if isinstance(value, torch.nn.Parameter)
    ]
    return TrainableParts(
        list(visual.transformer.resblocks), list(model.transformer.resblocks), heads
    )


def _open_clip_features(
    model: torch.nn.Module, pixels: torch.Tensor, tokens: torch.Tensor
) -> tuple[Any, Any]:
    image_features, text_features, *_ = model(pixels, tokens)
    return image_features, text_features


def _open_clip_pixels(architecture: Architecture, preprocess: PreprocessMode) -> PixelLoader:
    return partial(shape_pixels, size=architecture.image_size, mode=preprocess)


def _open_clip_grad_checkpointing(model: Any) -> None:
    model.set_grad_checkpointing(True)


# -- hf-clip (transformers CLIPModel) ----------------------------------------------------------


def _hf_parts(model: Any) -> TrainableParts:
    vision, text = model.vision_model, model.text_model
    return TrainableParts(
        list(vision.encoder.layers),
        list(text.encoder.layers),
        [
            vision.post_layernorm,
            text.final_layer_norm,
            model.visual_projection,
            model.text_projection,
        ],
    )


def _hf_features(
    model: torch.nn.Module, pixels: torch.Tensor, tokens: torch.Tensor
) -> tuple[Any, Any]:
    from hps.architectures.hf import EOS_TOKEN_ID, attention_mask

    # The attention mask the scorer's encode_text derives (padding after end-of-text).
    output = model(
        input_ids=tokens, pixel_values=pixels, attention_mask=attention_mask(tokens, EOS_TOKEN_ID)
    )
    return output.image_embeds, output.text_embeds  # both L2-normalised by CLIPModel


def _hf_pixels(architecture: Architecture, preprocess: PreprocessMode) -> PixelLoader:
    from hps.hf_clip import hf_shape_pixels

    if preprocess != architecture.preprocess:
        raise ValueError(
            f"{architecture.name} preprocesses as its transformers processor does "
            f"({architecture.preprocess}); preprocess {preprocess!r} is not available"
        )
    return partial(
        hf_shape_pixels, size=architecture.image_size, backend=architecture.image_backend
    )


def _hf_grad_checkpointing(model: Any) -> None:
    # Non-reentrant: with the first blocks frozen, the inputs of a checkpointed block need
    # not require grad, which the reentrant variant would silently not backpropagate through.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


_FAMILIES: dict[Family, FamilyHooks] = {
    "open_clip": FamilyHooks(
        _open_clip_parts, _open_clip_features, _open_clip_pixels, _open_clip_grad_checkpointing
    ),
    "hf-clip": FamilyHooks(_hf_parts, _hf_features, _hf_pixels, _hf_grad_checkpointing),
}


def family_hooks(family: Family) -> FamilyHooks:
    """The training hooks of a model family (an architecture's ``family``)."""
    return _FAMILIES[family]
