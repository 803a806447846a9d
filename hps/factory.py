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
    load_hf_checkpoint,
    read_hf_config,
    read_sidecar,
    read_verified,
    resolve_checkpoint,
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
        if architecture.is_hf:  # named with --arch (a Hugging Face folder says little more)
            continue
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
    (:class:`hps.checkpoints.ChecksumMismatch` otherwise). A checked file is read once and
    the weights are built from the very bytes that were hashed (a file replaced after the
    check is not loaded); this holds the file's bytes in memory while its tensors are built
    (peak about file + tensors). Without an expected sha256 the file is streamed from disk.

    An ``hf-clip`` architecture (``pickscore``) reads a Hugging Face folder or its
    ``model.safetensors`` (safetensors only; the folder's ``config.json`` must match the
    registered config) and scores with ``logit_scale.exp()`` of the weights.
    """
    if checkpoint is None:
        if arch is None:
            raise ValueError("give an architecture, a checkpoint, or both")
        architecture = get_architecture(arch)
        model = build_model(architecture)
        return LoadedModel(model, architecture, _scale_metadata(model, architecture, {}))
    path = resolve_checkpoint(checkpoint)
    named_arch = get_architecture(arch) if arch is not None else None
    state, metadata = _read_weights(path, named_arch, sha256)
    named = metadata.get("architecture")
    if named_arch is None:
        architecture = get_architecture(named) if named else infer_architecture(state)
    else:
        architecture = named_arch
        if named and named != arch:
            raise CheckpointError(f"{path}: checkpoint is for architecture {named!r}, not {arch!r}")
    with torch.device("meta"):  # check the shapes before paying for a real model
        check_state_dict(build_model(architecture), state, source=str(path))
    model = build_model(architecture)
    model.load_state_dict(state, strict=True)
    metadata = _scale_metadata(model, architecture, metadata)
    return LoadedModel(model.eval(), architecture, metadata, path)


def _read_weights(
    path: Path, named_arch: Architecture | None, sha256: str | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of the checkpoint file ``path``, checked against ``sha256`` or
    its sidecar when either is there. The checked bytes live only in this call: they are
    freed before the caller builds the model."""
    expected = sha256 or read_sidecar(path)
    data = read_verified(path, expected) if expected else None
    if named_arch is not None and named_arch.is_hf:
        _check_hf_folder(path, named_arch)
        return load_hf_checkpoint(path, data=data)
    return load_checkpoint(path, data=data)


def _check_hf_folder(path: Path, architecture: Architecture) -> None:
    """Refuse a Hugging Face checkpoint whose ``config.json`` is not ``architecture``'s."""
    from hps.architectures.hf import check_hf_config

    found = read_hf_config(path)
    if found is None:
        return
    differences = check_hf_config(found, architecture.model_cfg)
    if differences:
        raise CheckpointError(
            f"{path.parent / 'config.json'}: not a {architecture.name} model: "
            + ", ".join(differences[:5])
        )


def _scale_metadata(
    model: torch.nn.Module, architecture: Architecture, metadata: dict[str, Any]
) -> dict[str, Any]:
    """``metadata`` with the score scale of an ``hf-clip`` model: PickScore's
    ``logit_scale.exp()`` of its weights, unless the metadata names one. Others unchanged
    (open_clip models score 100 * cos unless their metadata says otherwise)."""
    if not metadata:
        metadata = {"format": "random-init"}
    if architecture.is_hf and "score_scale" not in metadata:
        from hps.architectures.hf import score_scale_of

        metadata = {**metadata, "score_scale": score_scale_of(model)}
    return metadata
