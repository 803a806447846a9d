"""The train job's starting point when a scope has no HPS model yet: the job's
``base_checkpoint`` or the configured ``TRAIN_BASE``, a fetched catalogue base (its file
verified against the sha256 recorded at fetch time) or a checkpoint file; a clear failure
otherwise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hps.architectures import get_architecture
from jobqueue.contracts import TrainParams
from worker.errors import JobFailure
from worker.tasks.training import NO_START, starting_point

BASE = "openai-vit-l-14"  # a real catalogue name; its record and file are the test's


def fetched(models_dir: Path, data: bytes = b"weights") -> Path:
    """What ``hps models fetch openai-vit-l-14`` leaves: the file and its record."""
    folder = models_dir / "hf" / "snapshot"
    folder.mkdir(parents=True)
    (folder / "open_clip_model.safetensors").write_bytes(data)
    record = {
        "name": BASE,
        "folder": "hf/snapshot",
        "architecture": "hps-v1",
        "checkpoint": "open_clip_model.safetensors",
        "files": {"open_clip_model.safetensors": {"sha256": hashlib.sha256(data).hexdigest()}},
    }
    (models_dir / "catalogue").mkdir()
    (models_dir / "catalogue" / f"{BASE}.json").write_text(json.dumps(record))
    return folder / "open_clip_model.safetensors"


def context(models_dir: Path, train_base: str = "", **params: Any) -> Any:
    """Just what ``starting_point`` reads of a job: its parameters, a transaction that finds
    no active model, and the settings."""
    settings = SimpleNamespace(models_dir=models_dir, train_base=train_base)
    return SimpleNamespace(
        params=TrainParams(**params),
        transaction=lambda work: None,
        scope=None,
        runtime=SimpleNamespace(settings=settings),
    )


def test_a_scope_without_a_model_starts_from_the_configured_base(tmp_path: Path) -> None:
    path = fetched(tmp_path)
    start = starting_point(context(tmp_path, train_base=BASE))
    assert (start.arch, start.path, start.base, start.name) == ("hps-v1", str(path), BASE, BASE)
    assert start.sha256 == hashlib.sha256(b"weights").hexdigest()
    # The stored model input the snapshot reads and the trainer's preprocess: the arch's.
    assert start.model_input == ("pad", get_architecture("hps-v1").image_size)
    # The job's own base_checkpoint (and arch) win over the setting.
    other = starting_point(context(tmp_path, train_base="", base_checkpoint=BASE, arch="small"))
    assert (other.arch, other.base) == ("small", BASE)
    assert other.model_input == ("pad", get_architecture("small").image_size)
    plain = starting_point(context(tmp_path, base_checkpoint="/models/mine.pt", arch="tiny"))
    assert (plain.path, plain.base, plain.sha256) == ("/models/mine.pt", None, None)
    # An architecture known only from the checkpoint, or Hugging Face CLIP: the originals.
    unknown = starting_point(context(tmp_path, base_checkpoint="/models/mine.pt"))
    assert (unknown.arch, unknown.model_input) == (None, None)
    hf = starting_point(context(tmp_path, base_checkpoint="/m/pick", arch="pickscore-tiny"))
    assert hf.model_input is None


def test_no_model_and_no_base_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(JobFailure, match="TRAIN_BASE"):
        starting_point(context(tmp_path))
    assert "openai-vit-l-14" in NO_START


def test_a_base_not_fetched_or_changed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JobFailure, match=f"run hps models fetch {BASE}"):
        starting_point(context(tmp_path, train_base=BASE))
    fetched(tmp_path).write_bytes(b"tampered")
    with pytest.raises(JobFailure, match=r"sha256|checksum"):
        starting_point(context(tmp_path, train_base=BASE))
    (tmp_path / "catalogue" / f"{BASE}.json").write_text('{"name": "')
    with pytest.raises(JobFailure, match=f"cannot start from {BASE}: .*fetch record"):
        starting_point(context(tmp_path, train_base=BASE))
