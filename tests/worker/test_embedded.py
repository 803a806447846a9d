"""The embedded defaults run the whole job path with no server: SQLite database, SQLite
Celery broker, local files, a worker process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from jobqueue.app import transport_options
from media.intake import intake_image
from media.store import LocalImageStore
from tests.worker.harness import ROOT
from worker.process import WorkerProcess

SERVER_SETTINGS = ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "MODELS_DIR", "SD_PIPELINE")


def test_a_score_job_on_embedded_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_SETTINGS}
    env.update(
        {
            "HPS_DATA_DIR": str(tmp_path / "data"),
            "PYTHONPATH": str(ROOT),
            "WORKER_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
        }
    )

    def hps(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    assert hps("db", "upgrade").returncode == 0
    code = (
        "import torch; from pathlib import Path; from hps.architectures import build_model, "
        "get_architecture; from hps.checkpoints import save_checkpoint; torch.manual_seed(0); "
        f"save_checkpoint(Path({str(tmp_path / 'tiny.safetensors')!r}), "
        "build_model(get_architecture('tiny')), {'architecture': 'tiny'})"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    added = hps(
        "registry",
        "add",
        "--name",
        "tiny",
        "--arch",
        "tiny",
        "--checkpoint",
        str(tmp_path / "tiny.safetensors"),
        "--activate",
    )
    assert added.returncode == 0, added.stderr
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(buffer, format="PNG")
    image = intake_image(buffer.getvalue(), max_bytes=10**7, max_pixels=10**7)
    LocalImageStore(tmp_path / "data" / "images").put(image.data, image.sha256)

    worker = WorkerProcess(
        env, tmp_path / "worker.log", name="embedded", pool="prefork", cwd=tmp_path
    )
    try:
        done = hps(
            "jobs",
            "submit",
            "score",
            "--param",
            "prompt=a red square",
            "--param",
            f'images=["{image.sha256}"]',
            "--wait",
            "--timeout",
            "120",
        )
    finally:
        worker.stop()
    assert done.returncode == 0, done.stderr + (tmp_path / "worker.log").read_text()[-2000:]
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["result"]["model_version"]["name"] == "tiny"
    assert "sqla+sqlite" in (tmp_path / "worker.log").read_text()


def test_redelivery_options_only_for_redis() -> None:
    assert transport_options("sqla+sqlite:///x.db", 100) == {}
    assert transport_options("redis://h:6379/0", 100)["visibility_timeout"] == 100
