"""The training state is safetensors + JSON, never a pickle: a planted pickle is refused
unopened, and optimiser, scheduler and RNG states survive the round trip exactly."""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hps.training.manifests import load_manifest
from hps.training.state import (
    LEGACY_STATE_FILE,
    STATE_FILE,
    TrainingStateError,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
)
from hps.training.trainer import TrainConfig, train
from tests.hps.datasets import write_export_manifest, write_planted_sets

ROOT = Path(__file__).resolve().parents[2]
FAST: dict[str, Any] = {"lr": 1e-3, "batch_size": 4, "device": "cpu", "warmup_ratio": 0.1}


class Exploit:
    """Unpickling this runs a shell command (as ``torch.load(weights_only=False)`` would)."""

    def __init__(self, marker: Path) -> None:
        self.command = f"echo pwned > {shlex.quote(str(marker))}"

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def plant_exploit(folder: Path, marker: Path) -> Path:
    """A ``train_state.pt`` as an attacker would craft it (a genuine torch.save archive)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LEGACY_STATE_FILE
    torch.save({"step": 1, "rng": Exploit(marker)}, path)
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("state")
    path = folder / "train.jsonl"
    write_export_manifest(path, write_planted_sets(folder / "img", 16, seed=7, prefix="s"))
    return path


def test_the_planted_file_is_a_live_exploit(tmp_path: Path) -> None:
    """Control: the old loader (weights_only=False) would have run the planted command."""
    marker = tmp_path / "marker"
    planted = plant_exploit(tmp_path / "run", marker)
    torch.load(planted, map_location="cpu", weights_only=False)
    assert marker.read_text().strip() == "pwned"


def test_resuming_refuses_a_planted_pickle_without_running_it(
    manifest: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    planted = plant_exploit(out, marker)
    sets = load_manifest(manifest)
    with pytest.raises(TrainingStateError, match="old pickle format, which is no longer loaded"):
        train("tiny", None, sets, out, TrainConfig(steps=2, **FAST), progress=False)
    assert not marker.exists()
    assert planted.exists() and not (out / STATE_FILE).exists()  # nothing else happened

    # Starting over (resume=False, `hps train --no-resume`) ignores it and removes it.
    result = train(
        "tiny", None, sets, out, TrainConfig(steps=2, **FAST), progress=False, resume=False
    )
    assert result.steps == 2 and (out / STATE_FILE).is_file()
    assert not planted.exists() and not marker.exists()


def test_hps_train_refuses_a_planted_pickle_in_one_line(manifest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    plant_exploit(out, marker)
    command = ["train", "--arch", "tiny", "--data", str(manifest), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *command, "--steps", "1", "--device", "cpu"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "train_state.pt" in errors[0] and "old pickle format" in errors[0]
    assert not marker.exists()


def test_a_saved_state_round_trips_exactly(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** (step + 1))
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    random.seed(11)
    np.random.seed(12)
    np.random.standard_normal()  # leaves a cached gaussian in NumPy's state
    torch.manual_seed(13)
    payload: dict[str, Any] = {
        "trainable": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": 3,
        "epoch": 0,
        "micro_done": 3,
        "rng": rng_state(),
        "config": {"lr": 1e-3, "preprocess": None, "odd": [float("inf"), 1 / 3]},
    }
    path = tmp_path / STATE_FILE
    save_state(path, payload)
    assert path.read_bytes()[8:9] == b"{"  # safetensors: a JSON header, then raw tensors
    expected_draws = (random.random(), np.random.standard_normal(), torch.rand(3))

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    loaded = load_state(path)
    set_rng_state(loaded["rng"])
    assert random.random() == expected_draws[0]
    assert np.random.standard_normal() == expected_draws[1]
    assert torch.equal(torch.rand(3), expected_draws[2])

    assert loaded["step"] == 3 and loaded["config"] == payload["config"]
    assert loaded["scheduler"] == scheduler.state_dict()
    saved_optimizer = optimizer.state_dict()
    assert loaded["optimizer"]["param_groups"] == saved_optimizer["param_groups"]
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.95)  # a tuple again
    assert set(loaded["optimizer"]["state"]) == set(saved_optimizer["state"]) == {0, 1, 2, 3}
    for index, moments in saved_optimizer["state"].items():
        for name, tensor in moments.items():
            assert torch.equal(loaded["optimizer"]["state"][index][name], tensor)
            assert loaded["optimizer"]["state"][index][name].dtype == tensor.dtype
    for key, tensor in payload["trainable"].items():
        assert torch.equal(loaded["trainable"][key], tensor)

    fresh = torch.optim.AdamW(model.parameters(), lr=1.0)
    fresh.load_state_dict(loaded["optimizer"])
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 0.5 ** (step + 1))
    fresh_scheduler.load_state_dict(loaded["scheduler"])
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a safetensors file at all",
        b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a": 1}' + b" " * 8,
    ],
)
def test_an_unreadable_state_fails_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(content)
    with pytest.raises(TrainingStateError, match="unreadable training state"):
        load_state(path)


def test_a_state_header_cannot_smuggle_objects(tmp_path: Path) -> None:
    """The JSON header decodes to plain data only: unknown tags stay inert dictionaries."""
    from safetensors.torch import save_file

    document = {
        "format_version": 1,
        "state": {"step": 1, "rng": {"__reduce__": ["os.system", "echo pwned"]}},
    }
    path = tmp_path / STATE_FILE
    save_file({"x": torch.zeros(1)}, str(path), metadata={"hps_train_state": json.dumps(document)})
    state = load_state(path)
    assert state["rng"] == {"__reduce__": ["os.system", "echo pwned"]}
