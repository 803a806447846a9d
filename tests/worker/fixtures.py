"""What a test module that runs jobs through a real worker sets up: its data folder, one
worker process for the module and a Celery client (see tests.worker.harness), and running a
job that must succeed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from db.models import JobStatus
from jobqueue.app import make_celery
from tests.worker.harness import (
    BROKER_URL,
    models_data_dir,
    running_worker,
    submit,
    wait_for_job,
    worker_env,
)


class QueueFixtures(NamedTuple):
    """Module-scoped fixtures; a module assigns them to the names its tests ask for:
    ``data_dir, worker, client = queue_fixtures(...)``."""

    data_dir: Any
    worker: Any
    client: Any


def queue_fixtures(folder: str, worker_name: str = "test") -> QueueFixtures:
    """``data_dir`` (a temporary ``folder`` with an empty ``models`` folder), ``worker`` (a
    worker process named ``worker_name`` on the test database, its log in the data folder)
    and ``client`` (a Celery client of the test broker), each once per module."""

    @pytest.fixture(scope="module")
    def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return models_data_dir(tmp_path_factory, folder)

    @pytest.fixture(scope="module")
    def worker(pg_url: str, data_dir: Path) -> Iterator[Any]:
        env = worker_env(pg_url, data_dir)
        with running_worker(env, data_dir / "worker.log", name=worker_name) as process:
            yield process

    @pytest.fixture(scope="module")
    def client(data_dir: Path) -> Celery:
        return make_celery(load_settings(broker_url=BROKER_URL, hps_data_dir=data_dir))

    return QueueFixtures(data_dir, worker, client)


def run_job(
    client: Celery,
    factory: sessionmaker[Session],
    kind: str,
    params: dict[str, Any],
    *,
    timeout: float = 300,
    **origin: Any,
) -> Any:
    """Submit a ``kind`` job from ``origin`` (see ``submit``), wait for it and assert that it
    succeeded (its error as the message); the job row."""
    job_id = submit(client, factory, kind, params, **origin)
    job = wait_for_job(factory, job_id, timeout=timeout)
    assert job.status == JobStatus.succeeded, job.error
    return job
