"""A bot records a job and dies before sending it; another bot's delivery loop finds the
orphan on its timed round and sends it, and a real worker (Redis broker) runs it to the end."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from bot import metrics
from bot.delivery import OutboxDelivery
from config import load_settings
from db.engine import make_async_engine, make_async_session_factory
from db.jobs import ORPHAN_AFTER
from db.models import Job, JobStatus, utcnow
from jobqueue.app import make_celery
from jobqueue.contracts import StatsParams
from jobqueue.submit import JobOrigin, record_job
from tests.worker.harness import (
    BROKER_URL,
    models_data_dir,
    outbox_rows,
    running_worker,
    wait_for_job,
    worker_env,
)


def sent_orphans() -> float:
    value = metrics.REGISTRY.get_sample_value("hps_bot_errors_total", {"kind": "orphan_job_sent"})
    return value or 0.0


async def test_a_job_recorded_by_a_bot_that_died_is_sent_and_run(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir: Path = models_data_dir(tmp_path_factory, "orphan-worker")
    origin = JobOrigin(requested_by=77, guild_id=7, channel_id=5)
    job_id = record_job(pg_factory, StatsParams(days=0), origin)  # ...and the bot died here
    then = utcnow() - ORPHAN_AFTER * 2
    with pg_factory() as session, session.begin():
        session.execute(
            update(Job).where(Job.id == job_id).values(created_at=then, updated_at=then)
        )

    client = make_celery(load_settings(broker_url=BROKER_URL, hps_data_dir=data_dir))
    engine = make_async_engine(pg_url)
    services = SimpleNamespace(
        async_factory=make_async_session_factory(engine), factory=pg_factory, celery=client
    )
    loop = OutboxDelivery(bot=SimpleNamespace(), services=services)  # type: ignore[arg-type]
    before = sent_orphans()
    try:
        with running_worker(worker_env(pg_url, data_dir), data_dir / "worker.log"):
            await loop.timed_round()
            await loop.timed_round()  # a second round finds nothing more to send
            job = wait_for_job(pg_factory, job_id, timeout=120)
    finally:
        await engine.dispose()
        client.close()
    assert job.status == JobStatus.succeeded, job.error
    assert job.sent_at is not None and job.attempts == 1
    assert sent_orphans() == before + 1
    [row] = outbox_rows(pg_factory, job_id)
    assert row.kind == "stats_result" and row.channel_id == 5
