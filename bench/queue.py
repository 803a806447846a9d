"""Scoring through the job queue vs the scorer called in-process, same images and model.

    .venv/bin/python -m bench.queue [--arch small] [--jobs 12] [--images-per-job 16] [--json]

Needs PostgreSQL and Redis on loopback (as the tests do). It recreates the ``hps_bench``
database, registers a model (random weights) and starts one worker process (solo pool, CPU).
- queue: ``jobs`` score jobs of ``images-per-job`` uploaded 512 px images each, submitted at
  once; time from the first submission to the last outbox row;
- in-process: ``HpsScorer.score`` on the same images in the same groups, same dtype;
- latency: one job with one image, enqueue to outbox row (median of 5), beside the model's
  own time for that image in-process.
Target: queue throughput >= 90% of in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
import torch
from sqlalchemy.engine import make_url

from bench.common import synthetic_png
from bench.ingest import DEFAULT_URL, recreate_database
from config import load_settings
from db.engine import make_engine, make_session_factory
from db.models import ModelKind
from db.outbox import OUTBOX_CHANNEL
from db.registry import promote_model_version, register_model_version
from hps.architectures import build_model, get_architecture
from hps.checkpoints import save_checkpoint
from hps.scoring import build_scorer
from jobqueue.app import make_celery
from jobqueue.contracts import ScoreParams
from jobqueue.submit import submit_job
from media.intake import intake_image
from media.store import LocalImageStore
from worker.process import WorkerProcess

BROKER = os.environ.get("HPS_BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
ROOT = Path(__file__).resolve().parents[1]


class OutboxListener:
    """Waits for outbox rows the way the bot does: LISTEN, no polling load on the database."""

    def __init__(self, url: str) -> None:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.connection = psycopg.connect(dsn, autocommit=True)
        self.connection.execute(f"LISTEN {OUTBOX_CHANNEL}")
        self.seen = 0

    def wait(self, count: int, timeout: float = 600) -> None:
        """Block until ``count`` more outbox notifications have arrived."""
        target = self.seen + count
        deadline = time.monotonic() + timeout
        while self.seen < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{target - self.seen} results missing after {timeout} s")
            for _ in self.connection.notifies(timeout=remaining, stop_after=target - self.seen):
                self.seen += 1

    def close(self) -> None:
        self.connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="queue vs in-process scoring")
    parser.add_argument("--arch", default="small")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--images-per-job", type=int, default=16)
    parser.add_argument("--keep-log", help="copy the worker's log here")
    parser.add_argument("--pool", choices=["solo", "prefork"], default="prefork")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    recreate_database(DEFAULT_URL)
    redis.Redis.from_url(BROKER).flushdb()
    factory = make_session_factory(make_engine(DEFAULT_URL))
    with tempfile.TemporaryDirectory(prefix="hps-bench-queue-") as folder:
        data = Path(folder)
        store = LocalImageStore(data / "images")
        models = data / "models"
        torch.manual_seed(0)
        save_checkpoint(
            models / "bench.safetensors",
            build_model(get_architecture(args.arch)),
            {"architecture": args.arch, "preprocess": "pad"},
        )
        with factory() as session, session.begin():
            version = register_model_version(
                session,
                kind=ModelKind.hps,
                name="bench",
                checkpoint_key="bench.safetensors",
                architecture=args.arch,
            )
            promote_model_version(session, version.id)
        total = args.jobs * args.images_per_job
        shas = []
        for seed in range(total):
            intake = intake_image(synthetic_png(seed), max_bytes=1 << 26, max_pixels=1 << 26)
            store.put(intake.data, intake.sha256)
            shas.append(intake.sha256)
        groups = [shas[i : i + args.images_per_job] for i in range(0, total, args.images_per_job)]

        scorer = build_scorer(None, models / "bench.safetensors", device="cpu")
        scorer.score("warm up", [store.get(s) for s in groups[0]])
        start = time.perf_counter()
        for group in groups:
            scorer.score("a castle on a hill", [store.get(s) for s in group])
        in_process_s = time.perf_counter() - start
        start = time.perf_counter()
        scorer.score("a castle on a hill", [store.get(shas[0])])
        forward_one_s = time.perf_counter() - start
        del scorer

        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": DEFAULT_URL,
            "BROKER_URL": BROKER,
            "HPS_DATA_DIR": str(data),
            "STORAGE_URL": (data / "images").as_uri(),
            "MODELS_DIR": str(models),
            "WORKER_DEVICE": "cpu",
        }
        worker = WorkerProcess(env, data / "worker.log", name="bench", cwd=ROOT, pool=args.pool)
        listener = OutboxListener(DEFAULT_URL)
        client = make_celery(load_settings(broker_url=BROKER, hps_data_dir=data))
        try:
            prompt = "a castle on a hill"
            submit_job(client, factory, ScoreParams(prompt="warm", images=groups[0]))
            listener.wait(1)
            start = time.perf_counter()
            for group in groups:
                submit_job(client, factory, ScoreParams(prompt=prompt, images=group))
            listener.wait(len(groups))
            queue_s = time.perf_counter() - start
            latencies = []
            for _ in range(5):
                start = time.perf_counter()
                submit_job(client, factory, ScoreParams(prompt=prompt, images=shas[:1]))
                listener.wait(1)
                latencies.append(time.perf_counter() - start)
        finally:
            listener.close()
            worker.stop()
            if args.keep_log:
                Path(args.keep_log).write_bytes((data / "worker.log").read_bytes())

    result: dict[str, Any] = {
        "arch": args.arch,
        "images": total,
        "in_process_images_per_s": total / in_process_s,
        "queue_images_per_s": total / queue_s,
        "queue_vs_in_process": in_process_s / queue_s,
        "single_job_latency_ms": statistics.median(latencies) * 1000,
        "single_image_forward_ms": forward_one_s * 1000,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"arch {args.arch} on CPU, {args.jobs} jobs x {args.images_per_job} images of 512 px")
    print(f"{'measurement':48} {'value':>12}")
    print(
        f"{'in-process HpsScorer.score (images/s)':48} {result['in_process_images_per_s']:>12.1f}"
    )
    print(f"{'through the queue (images/s)':48} {result['queue_images_per_s']:>12.1f}")
    print(f"{'queue / in-process':48} {result['queue_vs_in_process']:>12.2f}")
    latency, forward = result["single_job_latency_ms"], result["single_image_forward_ms"]
    print(f"{'one /hps score job, enqueue -> outbox (ms)':48} {latency:>12.1f}")
    print(f"{'model time for that image in-process (ms)':48} {forward:>12.1f}")
    print("target: queue >= 0.90 x in-process")


if __name__ == "__main__":
    main()
