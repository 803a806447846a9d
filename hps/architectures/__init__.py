"""Registry of named CLIP architectures, one JSON config each (open_clip's config layout plus
the activation and the default preprocessing), and the builder of an untrained model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

PreprocessMode = Literal["pad", "crop"]


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

    @property
    def image_size(self) -> int:
        """Input resolution in pixels (square)."""
        return int(self.model_cfg["vision_cfg"]["image_size"])

    @property
    def context_length(self) -> int:
        """Maximum number of text tokens."""
        return int(self.model_cfg["text_cfg"]["context_length"])

    @property
    def vision_layers(self) -> int:
        return int(self.model_cfg["vision_cfg"]["layers"])

    @property
    def text_layers(self) -> int:
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
    return Architecture(
        name=name,
        description=raw.get("description", ""),
        quick_gelu=bool(raw["quick_gelu"]),
        preprocess=preprocess,
        model_cfg=raw["model_cfg"],
    )


def build_model(architecture: Architecture) -> Any:
    """A freshly initialised open_clip CLIP of this architecture (fp32, CPU, eval mode)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    cfg = architecture.model_cfg
    model = CLIP(
        embed_dim=int(cfg["embed_dim"]),
        vision_cfg=CLIPVisionCfg(**cfg["vision_cfg"]),
        text_cfg=CLIPTextCfg(**cfg["text_cfg"]),
        quick_gelu=architecture.quick_gelu,
    )
    return model.eval()
