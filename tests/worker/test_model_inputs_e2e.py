"""Score jobs read the images' stored model inputs (decode once, issue 16 item 6), through the
real queue: Redis broker, a Celery worker process, PostgreSQL, a tiny model."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db.models import JobStatus
from hps.architectures import get_architecture
from hps.scoring import build_scorer
from media.intake import encode_canonical
from media.model_inputs import ModelInputSpec, is_valid_model_input, make_model_input
from media.store import BlobNotFound, LocalImageStore
from tests.hps.datasets import planted_image
from tests.worker.fixtures import queue_fixtures
from tests.worker.harness import outbox_rows, register_tiny_model, submit, wait_for_job

data_dir, worker, client = queue_fixtures("model-inputs-data")


def test_score_job_reads_stored_inputs_derives_missing_ones_and_replaces_damaged_ones(
    worker: Any, client: Celery, pg_factory: sessionmaker[Session], data_dir: Path
) -> None:
    store = LocalImageStore(data_dir / "images")
    spec = ModelInputSpec("pad", get_architecture("tiny").image_size)
    register_tiny_model(pg_factory, data_dir / "models", "inputs-e2e", seed=4)
    pictures = [planted_image(random.Random(40 + i), i == 0) for i in range(3)]
    results = [encode_canonical(picture) for picture in pictures]
    for result in results:
        store.put(result.data, result.sha256)
    shas = [r.sha256 for r in results]
    # 0: a stored input (of another picture, so that reading it shows in the score);
    # 1: a damaged stored input; 2: none stored.
    planted = make_model_input(planted_image(random.Random(99), True), spec)
    store.put_input(shas[0], spec.mode, spec.size, planted)
    store.put_input(shas[1], spec.mode, spec.size, b"\x89PNG\r\n\x1a\n damaged")
    with pytest.raises(BlobNotFound):
        store.get_input(shas[2], spec.mode, spec.size)

    job_id = submit(client, pg_factory, "score", {"prompt": "a red disc", "images": shas})
    job = wait_for_job(pg_factory, job_id)
    assert job.status == JobStatus.succeeded, job.error

    scorer = build_scorer(None, data_dir / "models" / "inputs-e2e.safetensors", device="cpu")
    from_originals = scorer.score("a red disc", [r.data for r in results])
    expected = scorer.score("a red disc", [planted, results[1].data, results[2].data])
    assert abs(expected[0] - from_originals[0]) > 0.01  # the planted input is visible
    [row] = outbox_rows(pg_factory, job_id)
    got = [entry["score"] for entry in row.payload["scores"]]
    assert got == pytest.approx(expected, abs=1e-3)
    # The damaged and the missing inputs were derived from the originals and stored.
    for index in (1, 2):
        stored = store.get_input(shas[index], spec.mode, spec.size)
        assert is_valid_model_input(stored, spec)
        assert stored == make_model_input(pictures[index], spec)
    assert store.get_input(shas[0], spec.mode, spec.size) == planted  # an intact one is kept
