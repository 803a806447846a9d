"""DDP under torchrun: two CPU processes with gloo train one model and write one checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from tests.hps.datasets import write_export_manifest, write_planted_sets

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_process_gloo_training(tmp_path: Path) -> None:
    write_export_manifest(
        tmp_path / "train.jsonl", write_planted_sets(tmp_path / "img", 40, seed=6)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "cli.main",
            "train",
            "--arch",
            "tiny",
            "--data",
            str(tmp_path / "train.jsonl"),
            "--out",
            str(tmp_path / "run"),
            "--lr",
            "1e-3",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # 40 sets over 2 ranks = 20 each, 4 per step: 5 optimiser steps, logged once (rank 0).
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]
    summaries = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only rank 0 writes files and reports them
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert "visual.transformer.resblocks.1.mlp.c_fc.weight" in weights
