"""`hps score | train | eval | models` as scripts use them; errors are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.hps.datasets import write_export_manifest, write_hpd_v1_manifest, write_planted_sets

ROOT = Path(__file__).resolve().parents[2]


def hps(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], result.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    write_hpd_v1_manifest(
        folder / "train.json", write_planted_sets(folder / "img", 96, seed=4, prefix="t")
    )
    write_export_manifest(
        folder / "test.jsonl", write_planted_sets(folder / "img", 40, seed=5, prefix="v")
    )
    return folder


def test_train_then_eval_then_score(data: Path, tmp_path: Path) -> None:
    trained = hps(
        "train",
        "--arch",
        "tiny",
        "--data",
        str(data / "train.json"),
        "--out",
        str(tmp_path / "run"),
        "--lr",
        "1e-3",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--seed",
        "0",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    checkpoint = Path(summary["checkpoint"])
    assert checkpoint.is_file() and summary["steps"] == 36
    assert (tmp_path / "run" / "training_curve.png").is_file()

    evaluated = hps(
        "eval",
        "--arch",
        "tiny",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(data / "test.jsonl"),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--report",
        str(tmp_path / "report"),
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert {"top1_accuracy", "pairwise_accuracy", "baseline"} <= result.keys()
    assert {"top1_accuracy", "pairwise_accuracy"} <= result["baseline"].keys()
    assert result["ranking_accuracy_hpsv2"] is None  # picks carry no human ranks (HPD v2 test do)
    assert result["top1_accuracy"] >= result["baseline"]["top1_accuracy"] + 0.2
    assert (tmp_path / "report" / "evaluation.md").is_file()

    image = data / "img" / "v00000_0.png"
    scored = hps(
        "score",
        "--arch",
        "tiny",
        "--checkpoint",
        str(checkpoint),
        "--prompt",
        "a cat",
        "--dtype",
        "float32",
        str(image),
        str(image),
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr
    rows = json.loads(scored.stdout)
    assert [row["image"] for row in rows] == [str(image)] * 2
    assert rows[0]["score"] == rows[1]["score"]

    inspected = hps("models", "inspect", str(checkpoint), cwd=tmp_path)
    assert json.loads(inspected.stdout)["architecture"] == "tiny"


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    image = tmp_path / "ok.png"
    Image.new("RGB", (20, 20)).save(image)
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert_one_line_error(
        hps(
            "score",
            "--arch",
            "tiny",
            "--checkpoint",
            str(tmp_path / "corrupt.pt"),
            "--prompt",
            "x",
            str(image),
            cwd=tmp_path,
        ),
        "unreadable torch checkpoint",
    )
    torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(1)}}, tmp_path / "wrong.pth")
    assert_one_line_error(
        hps(
            "score",
            "--arch",
            "tiny",
            "--checkpoint",
            str(tmp_path / "wrong.pth"),
            "--prompt",
            "x",
            str(image),
            cwd=tmp_path,
        ),
        "does not fit the architecture",
        "missing keys",
    )
    (tmp_path / "notes.png").write_text("hello")
    assert_one_line_error(
        hps(
            "score",
            "--arch",
            "tiny",
            "--prompt",
            "x",
            str(image),
            str(tmp_path / "notes.png"),
            cwd=tmp_path,
        ),
        "notes.png: cannot read image",
    )
    assert_one_line_error(
        hps("score", "--arch", "vit-xxl", "--prompt", "x", str(image), cwd=tmp_path),
        "unknown architecture 'vit-xxl'",
    )
    assert_one_line_error(
        hps("models", "fetch", "http://example.invalid/model.pt", cwd=tmp_path),
        "neither a published name nor an https URL",
    )
