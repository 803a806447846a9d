"""The export job through the real queue: Redis broker, a Celery worker process, PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from db.models import JobStatus
from jobqueue.app import make_celery
from media.store import LocalImageStore
from tests.exchange.conftest import GUILD, SPLIT_SALT, build_community
from tests.worker.harness import (
    BROKER_URL,
    flush_broker,
    outbox_rows,
    start_worker,
    submit,
    submit_unchecked,
    wait_for_job,
    worker_env,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-worker")


@pytest.fixture(scope="module")
def worker(pg_url: str, data_dir: Path) -> Iterator[Any]:
    flush_broker()
    env = worker_env(pg_url, data_dir, SPLIT_SALT=SPLIT_SALT)
    env.pop("EXPORT_USER_SALT", None)
    process = start_worker(env, data_dir / "worker.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Celery:
    return make_celery(load_settings(broker_url=BROKER_URL, hps_data_dir=data_dir))


def test_export_job_end_to_end(
    worker: Any, client: Celery, pg_factory: sessionmaker[Session], data_dir: Path
) -> None:
    store = LocalImageStore(data_dir / "images")
    community = build_community(pg_factory, store, prompts=12)
    job_id = submit(
        client,
        pg_factory,
        "export",
        {"licence": "cc-by-sa-4.0", "guild_id": GUILD},  # what /hps admin export sends
        requested_by=77,
        channel_id=5,
    )
    job = wait_for_job(pg_factory, job_id, timeout=180)
    assert job.status == JobStatus.succeeded, job.error
    assert job.progress == 1.0
    [row] = outbox_rows(pg_factory, job_id)
    payload = row.payload
    assert row.kind == "export_result" and row.channel_id == 5
    assert payload["requested_by"] == 77
    assert f"{community.choices:,} choices" in payload["text"] and "cc-by-sa-4.0" in payload["text"]
    [attachment] = payload["files"]
    assert attachment["filename"] == "histogram.png"
    assert Image.open(io.BytesIO(store.get(attachment["sha256"]))).format == "PNG"
    folder = Path(payload["export_path"])
    assert folder == data_dir / "exports" / f"export-{job_id}"
    assert payload["counts"]["choices"] == community.choices == job.result["counts"]["choices"]
    assert (folder / "README.md").is_file() and list((folder / "data").glob("*.parquet"))
    assert "license: cc-by-sa-4.0" in (folder / "README.md").read_text()
    assert (data_dir / "export_user_salt").is_file()  # no EXPORT_USER_SALT configured

    bad = submit_unchecked(client, pg_factory, "export", {"formats": "csv"}, channel_id=5)
    failed = wait_for_job(pg_factory, bad, timeout=60)
    assert failed.status == JobStatus.failed and "unknown export format" in (failed.error or "")
