"""One factory: an architecture name and an optional checkpoint in, a model out (a scorer of
it: :func:`hps.scoring.build_scorer`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hps.architectures import (
    Architecture,
    build_model,
    get_architecture,
    list_architectures,
)
from hps.checkpoints import (
    CheckpointError,
    check_state_dict,
    load_checkpoint,
    read_sidecar,
    resolve_checkpoint,
    verify_sha256,
)


@dataclass
class LoadedModel:
    """A CLIP model with what is known about it."""

    model: torch.nn.Module
    architecture: Architecture
    metadata: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None


def infer_architecture(state: dict[str, torch.Tensor]) -> Architecture:
    """The registered architecture whose tensors all have the checkpoint's shapes."""
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    matches = []
    for name in list_architectures():
        architecture = get_architecture(name)
        with torch.device("meta"):
            expected = build_model(architecture).state_dict()
        if {k: tuple(v.shape) for k, v in expected.items()} == shapes:
            matches.append(architecture)
    if len(matches) == 1:
        return matches[0]
    if matches:  # same shapes, different activation (QuickGELU vs GELU)
        names = ", ".join(m.name for m in matches)
        raise CheckpointError(f"the checkpoint fits several architectures ({names}); pass --arch")
    raise CheckpointError(
        "the checkpoint matches no registered architecture; pass --arch "
        f"(known: {', '.join(list_architectures())})"
    )


def load_model(
    arch: str | None,
    checkpoint: str | Path | None = None,
    *,
    sha256: str | None = None,
) -> LoadedModel:
    """Build ``arch`` and load ``checkpoint`` into it (format detected from the file; a
    training output folder stands for the model file in it).

    Without a checkpoint the weights are randomly initialised (tests, timing). With a
    project checkpoint the architecture may be omitted: its metadata names it. The file must
    hash to ``sha256`` when given, else to its ``<file>.sha256`` sidecar when there is one
    (:class:`hps.checkpoints.ChecksumMismatch` otherwise), before anything is read from it.
    """
    if checkpoint is None:
        if arch is None:
            raise ValueError("give an architecture, a checkpoint, or both")
        architecture = get_architecture(arch)
        return LoadedModel(build_model(architecture), architecture, {"format": "random-init"})
    path = resolve_checkpoint(checkpoint)
    expected = sha256 or read_sidecar(path)
    if expected:
        verify_sha256(path, expected)
    state, metadata = load_checkpoint(path)
    if arch is None:
        named = metadata.get("architecture")
        architecture = get_architecture(named) if named else infer_architecture(state)
    else:
        architecture = get_architecture(arch)
        named = metadata.get("architecture")
        if named and named != arch:
            raise CheckpointError(f"{path}: checkpoint is for architecture {named!r}, not {arch!r}")
    model = build_model(architecture)
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state, strict=True)
    return LoadedModel(model.eval(), architecture, metadata, path)
