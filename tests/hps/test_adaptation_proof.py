"""The paper's payoff on the small ``toy`` generator: an HPS model that learnt a planted
preference adapts the generator (``hps adapt``, the command line a user runs), and on held-out
prompts the adapted model's images score higher than the base model's from the same seeds.

The planted preference (a big red disc among clutter, :mod:`tests.hps.datasets`) is learnt by
the ``tiny`` HPS model from pictures unlike the toy's; what it then likes in the toy's pictures
(more red, a bigger, darker figure) is the preference the adaptation has to find. The toy
pipeline is built once into ``$HPS_TOY_CACHE`` (a few minutes on first use).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hps.diffusion.toy_corpus import sample_prompts
from tests.hps.datasets import write_hpd_v1_manifest, write_planted_sets

ROOT = Path(__file__).resolve().parents[2]
MIN_WIN_RATE = 0.65


def hps(*args: str, cwd: Path, timeout: float = 1200) -> dict[str, Any]:
    """Run the ``hps`` command with one torch thread (the machine may be shared) and return
    its JSON output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture(scope="module")
def planted_hps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``tiny`` HPS model trained on sets where the pick is the picture with a red disc;
    its training folder (accepted wherever a checkpoint is)."""
    folder = tmp_path_factory.mktemp("planted")
    manifest = write_hpd_v1_manifest(
        folder / "train.json", write_planted_sets(folder / "img", 200, seed=4, prefix="t")
    )
    test = write_hpd_v1_manifest(
        folder / "test.json", write_planted_sets(folder / "img", 60, seed=5, prefix="v")
    )
    common = ("--arch", "tiny", "--device", "cpu")
    hps(
        "train", *common, "--data", str(manifest), "--out", str(folder / "run"),
        "--lr", "1e-3", "--epochs", "4", "--batch-size", "8", "--seed", "0",
        cwd=folder,
    )  # fmt: skip
    evaluated = hps(
        "eval", *common, "--checkpoint", str(folder / "run"), "--data", str(test),
        "--dtype", "float32",
        cwd=folder,
    )  # fmt: skip
    assert evaluated["top1_accuracy"] >= 0.9, evaluated  # the preference is learnt
    return folder / "run"


def test_adapting_the_toy_generator_raises_hps_on_held_out_prompts(
    planted_hps: Path, tmp_path: Path
) -> None:
    (tmp_path / "train.txt").write_text("\n".join(sample_prompts(24, seed=0)) + "\n")
    held_out = sample_prompts(40, seed=0)[24:]  # the same order: no overlap with training
    (tmp_path / "eval.txt").write_text("\n".join(held_out) + "\n")
    report = hps(
        "adapt", "--pipeline", "toy", "--arch", "tiny", "--checkpoint", str(planted_hps),
        "--prompts", "train.txt", "--eval-prompts", "eval.txt", "--images-per-prompt", "8",
        "--inference-steps", "10", "--lora-steps", "300", "--lr", "1e-3", "--batch-size", "4",
        "--device", "cpu", "--out", "adapted",
        cwd=tmp_path,
    )  # fmt: skip
    evaluation = report["evaluation"]
    low, _high = evaluation["adapted_interval"]
    assert low > evaluation["base_mean"], evaluation
    assert evaluation["win_rate"] >= MIN_WIN_RATE, evaluation
    # The LoRA's own effect, not the negative prompt's: the toy learnt the phrase as neutral.
    assert evaluation["win_rate_vs_base_negative"] >= MIN_WIN_RATE, evaluation
    assert evaluation["pairs"] == len(held_out) * 4
    assert (tmp_path / "adapted" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / evaluation["grid_png"]).is_file()
    selection = report["selection"]
    assert selection["source"] == "generated" and selection["generated"] == 24 * 8
    assert selection["positives"] >= 12 and selection["negatives"] >= 12
