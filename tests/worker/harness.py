"""A real Celery worker process on a real Redis broker and the test PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import run_transaction
from db.jobs import create_job, get_job
from db.models import TERMINAL_JOB_STATUSES, ModelKind, OutboxMessage
from db.registry import promote_model_version, register_model_version
from db.scope import Scope
from hps.architectures import build_model, get_architecture
from hps.checkpoints import save_checkpoint, sha256_of_file
from jobqueue.contracts import parse_params
from jobqueue.submit import JobOrigin, enqueue_job, submit_job
from worker.process import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("HPS_TEST_BROKER_URL", "redis://127.0.0.1:6379/14")


def flush_broker() -> None:
    redis.Redis.from_url(BROKER_URL).flushdb()


def worker_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "BROKER_URL": BROKER_URL,
        "HPS_DATA_DIR": str(data_dir),
        "STORAGE_URL": (data_dir / "images").as_uri(),
        "MODELS_DIR": str(data_dir / "models"),
        "TASK_VISIBILITY_TIMEOUT_S": "6",
        "WORKER_DEVICE": "cpu",
        "SD_PIPELINE": "tiny",
        "OMP_NUM_THREADS": "1",
    }
    env.update(extra)
    return env


def start_worker(
    env: dict[str, str], log_path: Path, name: str = "test", pool: str = "solo"
) -> WorkerProcess:
    """A worker on the gpu and default queues (solo: the task runs in the main process)."""
    return WorkerProcess(env, log_path, name=name, cwd=ROOT, pool=pool)


@contextmanager
def running_worker(
    env: dict[str, str], log_path: Path, name: str = "test"
) -> Iterator[WorkerProcess]:
    """A fresh broker queue and a worker (see :func:`start_worker`), stopped at the end."""
    flush_broker()
    process = start_worker(env, log_path, name=name)
    try:
        yield process
    finally:
        process.stop()


def models_data_dir(factory: pytest.TempPathFactory, name: str) -> Path:
    """A module's data folder with an empty ``models`` folder in it."""
    folder = factory.mktemp(name)
    (folder / "models").mkdir()
    return folder


def pool_children(worker: WorkerProcess) -> list[int]:
    """Process ids of a prefork worker's pool children."""
    found = subprocess.run(["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def wait_for_job(
    factory: sessionmaker[Session],
    job_id: uuid.UUID,
    timeout: float = 120.0,
    until: Callable[[Any], bool] | None = None,
) -> Any:
    """Poll until the job is finished (or ``until(job)`` holds); return the job row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with factory() as session:
            job = get_job(session, job_id)
            if until(job) if until else job.status in TERMINAL_JOB_STATUSES:
                return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not get there in {timeout} s")


def submit(
    client: Any,
    factory: sessionmaker[Session],
    kind: str,
    params: dict[str, Any] | None = None,
    **origin: Any,
) -> uuid.UUID:
    """``submit_job`` with the parameters as JSON (checked by the contract, as the CLI's are)
    and the origin's fields as keywords."""
    return submit_job(client, factory, parse_params(kind, params), JobOrigin(**origin))


def submit_unchecked(
    client: Any,
    factory: sessionmaker[Session],
    kind: str,
    params: dict[str, Any],
    **origin: Any,
) -> uuid.UUID:
    """A job row with parameters no client checked (an older client's, or written by hand),
    sent to the workers: they validate it on arrival."""
    job_id = run_transaction(
        factory, lambda session: create_job(session, kind, params, **origin).id
    )
    enqueue_job(client, factory, kind, job_id)
    return job_id


def outbox_rows(factory: sessionmaker[Session], job_id: uuid.UUID) -> list[OutboxMessage]:
    with factory() as session:
        return list(session.scalars(select(OutboxMessage).where(OutboxMessage.job_id == job_id)))


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def register_tiny_model(
    factory: sessionmaker[Session],
    models_dir: Path,
    name: str,
    *,
    seed: int = 0,
    activate: bool = True,
    guild_id: int | None = None,
) -> int:
    """A seeded random tiny model saved in the project format and registered as
    ``guild_id``'s (None: global); ``activate`` makes it the active one there."""
    torch.manual_seed(seed)
    model = build_model(get_architecture("tiny"))
    key = f"{name}.safetensors"
    save_checkpoint(
        models_dir / key,
        model,
        {
            "architecture": "tiny",
            "preprocess": "pad",
            "base": {"kind": "random-init", "seed": seed},
        },
    )
    with factory() as session, session.begin():
        version = register_model_version(
            session,
            kind=ModelKind.hps,
            name=name,
            checkpoint_key=key,
            architecture="tiny",
            checkpoint_sha256=sha256_of_file(models_dir / key),
            guild_id=guild_id,
        )
        if activate:
            scope = Scope.pooled() if guild_id is None else Scope.guild(guild_id)
            promote_model_version(session, version.id, scope)
        return version.id
