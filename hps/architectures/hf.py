"""The ``hf-clip`` family's model: a ``transformers`` CLIPModel with the scorer's interface
(``encode_image``, ``encode_text``), built from a registered ``CLIPConfig``; and the checks
of a Hugging Face checkpoint's ``config.json`` against it. Imports ``transformers`` lazily."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

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
