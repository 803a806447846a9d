"""Registry of named CLIP architectures, one JSON config each, and the builder of an
untrained model.

Two families: ``open_clip`` (the default: open_clip's config layout plus the activation and
the default preprocessing) and ``hf-clip`` (a Hugging Face ``transformers`` ``CLIPConfig``,
e.g. PickScore v1; its model in :mod:`hps.architectures.hf`, scored through
:mod:`hps.hf_clip` with the ``transformers`` tokenizer and
image processor, ``image_backend`` naming which of its processors: ``pil`` or
``torchvision``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

PreprocessMode = Literal["pad", "crop"]
Family = Literal["open_clip", "hf-clip"]
FAMILIES: tuple[Family, ...] = ("open_clip", "hf-clip")


class UnknownArchitecture(ValueError):
    """The architecture name is not registered."""


@dataclass(frozen=True)
class Architecture:
    """A named CLIP architecture."""

    name: str
    description: str
    quick_gelu: bool
    preprocess: PreprocessMode
    model_cfg: dict[str, Any]
    family: Family = "open_clip"
    image_backend: str = "pil"  # hf-clip only: the transformers image processor's backend

    @property
    def is_hf(self) -> bool:
        """A Hugging Face ``transformers`` CLIP (PickScore), not an open_clip one."""
        return self.family == "hf-clip"

    @property
    def image_size(self) -> int:
        """Input resolution in pixels (square)."""
        if self.is_hf:
            return int(self.model_cfg["vision_config"]["image_size"])
        return int(self.model_cfg["vision_cfg"]["image_size"])

    @property
    def context_length(self) -> int:
        """Maximum number of text tokens."""
        if self.is_hf:
            return int(self.model_cfg["text_config"].get("max_position_embeddings", 77))
        return int(self.model_cfg["text_cfg"]["context_length"])

    @property
    def vision_layers(self) -> int:
        """Number of vision transformer blocks."""
        if self.is_hf:
            return int(self.model_cfg["vision_config"]["num_hidden_layers"])
        return int(self.model_cfg["vision_cfg"]["layers"])

    @property
    def text_layers(self) -> int:
        """Number of text transformer blocks."""
        if self.is_hf:
            return int(self.model_cfg["text_config"]["num_hidden_layers"])
        return int(self.model_cfg["text_cfg"]["layers"])


def _config_files() -> dict[str, Any]:
    folder = resources.files(__package__)
    return {
        entry.name.removesuffix(".json"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


@cache
def list_architectures() -> tuple[str, ...]:
    """Names of all registered architectures."""
    return tuple(sorted(_config_files()))


@cache
def get_architecture(name: str) -> Architecture:
    """The architecture registered under ``name``."""
    files = _config_files()
    if name not in files:
        raise UnknownArchitecture(
            f"unknown architecture {name!r}; known: {', '.join(list_architectures())}"
        )
    raw = json.loads(files[name].read_text())
    preprocess = raw.get("preprocess", "pad")
    if preprocess not in ("pad", "crop"):
        raise ValueError(f"architecture {name}: preprocess must be pad or crop")
    family = raw.get("family", "open_clip")
    if family not in FAMILIES:
        raise ValueError(f"architecture {name}: family must be one of {', '.join(FAMILIES)}")
    return Architecture(
        name=name,
        description=raw.get("description", ""),
        quick_gelu=bool(raw.get("quick_gelu", False)),
        preprocess=preprocess,
        model_cfg=raw["model_cfg"],
        family=family,
        image_backend=raw.get("image_backend", "pil"),
    )


def build_model(architecture: Architecture) -> Any:
    """A freshly initialised CLIP of this architecture (fp32, CPU, eval mode): open_clip's,
    or for the ``hf-clip`` family a ``transformers`` one
    (:func:`hps.architectures.hf.build_hf_clip`)."""
    if architecture.is_hf:
        from hps.architectures.hf import build_hf_clip

        return build_hf_clip(architecture.model_cfg)
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    cfg = architecture.model_cfg
    model = CLIP(
        embed_dim=int(cfg["embed_dim"]),
        vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]),
        text_cfg=CLIPTextCfg(**cfg["text_cfg"]),
        quick_gelu=architecture.quick_gelu,
    )
    return model.eval()
