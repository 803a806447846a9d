"""A training output folder stands for the checkpoint in it, wherever a checkpoint is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hps.architectures import build_model, get_architecture
from hps.checkpoints import (
    CHECKPOINT_FILES,
    LORA_WEIGHTS_FILE,
    TRAINING_STATE_FILE,
    CheckpointError,
    ChecksumMismatch,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    write_sidecar,
)
from hps.factory import load_model
from hps.scoring import build_scorer
from hps.training.state import STATE_FILE
from hps.training.trainer import MODEL_FILE


def tiny_run(folder: Path, seed: int = 0) -> Path:
    """A folder laid out as ``hps train --out`` leaves it: the model file, metrics, curve."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("")
    return save_checkpoint(
        folder / MODEL_FILE,
        build_model(get_architecture("tiny")),
        {"architecture": "tiny", "preprocess": "pad", "base": {"kind": "random-init"}},
    )


def test_the_names_are_the_trainers() -> None:
    assert MODEL_FILE in CHECKPOINT_FILES
    assert STATE_FILE == TRAINING_STATE_FILE


def test_resolve_checkpoint(tmp_path: Path) -> None:
    model_file = tiny_run(tmp_path / "run")
    assert resolve_checkpoint(tmp_path / "run") == model_file
    assert resolve_checkpoint(str(tmp_path / "run")) == model_file
    assert resolve_checkpoint(model_file) == model_file
    missing = tmp_path / "nothing.safetensors"  # left for the loader's own error
    assert resolve_checkpoint(missing) == missing

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as error:
        resolve_checkpoint(tmp_path / "empty")
    assert str(error.value) == (
        f"{tmp_path / 'empty'}: no checkpoint in this folder; expected model.safetensors"
    )
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / STATE_FILE).write_bytes(b"state")
    with pytest.raises(CheckpointError, match="training state only: the run has not finished"):
        resolve_checkpoint(tmp_path / "stopped")
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / LORA_WEIGHTS_FILE).write_bytes(b"lora")
    with pytest.raises(CheckpointError, match="a LoRA for the generator, not an HPS model"):
        resolve_checkpoint(tmp_path / "lora")


def test_loaders_take_the_folder(tmp_path: Path) -> None:
    model_file = tiny_run(tmp_path / "run", seed=3)
    from_folder = load_model(None, tmp_path / "run")
    from_file = load_model("tiny", model_file)
    assert from_folder.architecture.name == "tiny" and from_folder.checkpoint == model_file
    for key, value in from_file.model.state_dict().items():
        assert torch.equal(from_folder.model.state_dict()[key], value), key
    state, metadata = load_checkpoint(tmp_path / "run")
    assert (
        metadata["architecture"] == "tiny" and state.keys() == from_file.model.state_dict().keys()
    )
    scorer = build_scorer("tiny", str(tmp_path / "run"), device="cpu")
    assert scorer.architecture.name == "tiny"

    with pytest.raises(CheckpointError, match="no checkpoint in this folder"):
        load_model("tiny", tmp_path)  # the folder above holds no model file

    # The model file's sidecar (or a pinned sha256) is still checked through the folder.
    write_sidecar(model_file, "0" * 64)
    with pytest.raises(ChecksumMismatch):
        load_model(None, tmp_path / "run")
    with pytest.raises(ChecksumMismatch):
        load_model(None, tmp_path / "run", sha256="1" * 64)
