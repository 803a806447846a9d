"""A killed worker and a restarted database cost time, not correctness."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from db.ingest import GenerationIn, ImageIn, record_generation
from db.models import JobStatus, Score
from jobqueue.app import make_celery
from media.intake import encode_canonical
from media.store import LocalImageStore, key_for
from tests.worker.harness import (
    BROKER_URL,
    flush_broker,
    outbox_rows,
    pool_children,
    register_tiny_model,
    start_worker,
    submit,
    wait_for_job,
    worker_env,
)

IMAGES = 480


def seed_images(factory: sessionmaker[Session], store: LocalImageStore, count: int) -> None:
    """``count`` distinct 256 px images in generations of 4."""
    rng = random.Random(0)
    with factory() as session, session.begin():
        for index in range(count // 4):
            images = []
            for _ in range(4):
                image = Image.effect_noise((256, 256), 40 + rng.randrange(60)).convert("RGB")
                result = encode_canonical(image, compute_phash=False)
                store.put(result.data, result.sha256)
                images.append(ImageIn(result.sha256, key_for(result.sha256), 256, 256))
            record_generation(
                session,
                GenerationIn(7_000_000 + index, 1, f"noise {index}", "test", images, guild_id=1),
            )


def scores_per_image(factory: sessionmaker[Session]) -> tuple[int, int]:
    with factory() as session:
        total = int(session.scalar(select(func.count()).select_from(Score)) or 0)
        distinct = int(session.scalar(select(func.count(func.distinct(Score.image_id)))) or 0)
    return total, distinct


@pytest.fixture
def setup(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path: Path
) -> tuple[dict[str, str], LocalImageStore]:
    flush_broker()
    (tmp_path / "models").mkdir()
    store = LocalImageStore(tmp_path / "images")
    register_tiny_model(pg_factory, tmp_path / "models", "resilience", seed=3)
    seed_images(pg_factory, store, IMAGES)
    return worker_env(pg_url, tmp_path), store


@pytest.mark.parametrize("victim", ["whole worker", "pool child"])
def test_sigkilled_worker_task_is_redelivered_and_completes_once(
    setup: tuple[dict[str, str], LocalImageStore],
    pg_factory: sessionmaker[Session],
    tmp_path: Path,
    victim: str,
) -> None:
    env, _store = setup
    client = make_celery(load_settings(broker_url=BROKER_URL, hps_data_dir=tmp_path))
    first = start_worker(env, tmp_path / "worker-1.log", name="doomed", pool="prefork")
    second = first
    try:  # whatever fails, no worker outlives the test (it would take later tests' tasks)
        job_id = submit(client, pg_factory, "score_unscored", {"chunk_size": 16})
        wait_for_job(pg_factory, job_id, until=lambda _job: scores_per_image(pg_factory)[0] >= 32)
        if victim == "whole worker":  # a lost machine: the broker redelivers after the timeout
            first.kill()
            partial, _ = scores_per_image(pg_factory)
            second = start_worker(env, tmp_path / "worker-2.log", name="rescuer")
        else:  # an OOM-killed child: the parent rejects the message and a new child takes it
            [child] = pool_children(first)
            os.kill(child, signal.SIGKILL)
            partial, _ = scores_per_image(pg_factory)
        job = wait_for_job(pg_factory, job_id, timeout=180)
    finally:
        second.stop()
        first.stop()
    assert 0 < partial < IMAGES
    assert job.status == JobStatus.succeeded, job.error
    assert job.attempts == 2
    assert scores_per_image(pg_factory) == (IMAGES, IMAGES)  # no duplicates, none missing
    assert len(outbox_rows(pg_factory, job_id)) == 1
    assert job.result["scored"] <= IMAGES - partial + 16  # the rescue did only what was left


@pytest.mark.skipif(
    shutil.which("pg_ctlcluster") is None, reason="needs a local PostgreSQL cluster"
)
def test_database_restart_during_a_task(
    setup: tuple[dict[str, str], LocalImageStore],
    pg_factory: sessionmaker[Session],
    pg_engine: Engine,
    tmp_path: Path,
) -> None:
    env, _store = setup
    client = make_celery(load_settings(broker_url=BROKER_URL, hps_data_dir=tmp_path))
    worker = start_worker(env, tmp_path / "worker.log", name="steady")
    try:
        job_id = submit(client, pg_factory, "score_unscored", {"chunk_size": 16})
        wait_for_job(pg_factory, job_id, until=lambda _job: scores_per_image(pg_factory)[0] >= 32)
        version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        pg_engine.dispose()  # this test process's pooled connections died too
        deadline = time.monotonic() + 60
        while True:  # wait for the server to accept connections again
            try:
                job = wait_for_job(pg_factory, job_id, timeout=180)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                pg_engine.dispose()
    finally:
        worker.stop()
    assert job.status == JobStatus.succeeded, job.error
    assert scores_per_image(pg_factory) == (IMAGES, IMAGES)
    assert len(outbox_rows(pg_factory, job_id)) == 1
    log = (tmp_path / "worker.log").read_text()
    assert "database error, retrying" in log or "Retry in" in log
