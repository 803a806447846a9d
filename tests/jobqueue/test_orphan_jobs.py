"""Orphans: a job recorded (``record_job``) whose client died before sending its task stays
``queued`` with ``sent_at`` NULL; once older than ORPHAN_AFTER it is claimed by exactly one
sender and sent on the real Redis broker, and never again. Young, cancelled and sent jobs are
left alone, and the rows that existed before ``sent_at`` (migration 0007) count as sent."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery
from sqlalchemy import Uuid, bindparam, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from db.engine import make_engine, make_session_factory
from db.jobs import ORPHAN_AFTER, create_job, mark_job_sent, request_cancel, unsent_jobs
from db.models import Job, JobStatus, OutboxMessage, UTCDateTime, utcnow
from jobqueue.app import make_celery
from jobqueue.contracts import ScoreParams, StatsParams
from jobqueue.submit import (
    UNKNOWN_KIND_MESSAGE,
    JobOrigin,
    enqueue_job,
    record_job,
    send_unsent_jobs,
    submit_job,
)
from migrations.runner import downgrade, upgrade
from tests.conftest import TEST_DATABASE_URL, ensure_database, libpq_dsn

BROKER_URL = os.environ.get("HPS_TEST_BROKER_URL", "redis://127.0.0.1:6379/14")
OLD = ORPHAN_AFTER + timedelta(minutes=1)
ORIGIN = JobOrigin(requested_by=5, guild_id=20, channel_id=10)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Celery]:
    """A Celery client on the test broker, whose queues start empty (no worker reads them)."""
    redis.Redis.from_url(BROKER_URL).flushdb()
    app = make_celery(load_settings(broker_url=BROKER_URL, hps_data_dir=tmp_path))
    yield app
    app.close()


def broker_task_ids() -> Counter[str]:
    """How many messages the broker's queues hold for each task id."""
    broker = redis.Redis.from_url(BROKER_URL)
    ids: Counter[str] = Counter()
    for key in broker.keys("*"):
        if broker.type(key) == b"list":  # a queue (the rest is kombu's bookkeeping)
            for raw in broker.lrange(key, 0, -1):
                ids[json.loads(raw)["headers"]["id"]] += 1
    return ids


def recorded(factory: sessionmaker[Session], kind: str = "score", **origin: Any) -> uuid.UUID:
    """A job row as record_job leaves it (not sent), with stored parameters of ``kind``."""
    with factory() as session, session.begin():
        return create_job(session, kind, {"prompt": "a fox"}, **origin).id


def backdate(factory: sessionmaker[Session], job_ids: list[uuid.UUID], by: timedelta) -> None:
    """The jobs were recorded (and last touched) ``by`` ago: their client died then."""
    then = utcnow() - by
    with factory() as session, session.begin():
        session.execute(
            update(Job).where(Job.id.in_(job_ids)).values(created_at=then, updated_at=then)
        )


def sent_at(factory: sessionmaker[Session], job_id: uuid.UUID) -> datetime | None:
    with factory() as session:
        return session.scalar(select(Job.sent_at).where(Job.id == job_id))


# --- claiming (both backends) ---------------------------------------------------------------


def test_only_old_unsent_queued_jobs_are_claimed_and_once(factory: sessionmaker[Session]) -> None:
    orphan = recorded(factory)
    young = recorded(factory)
    cancelled = recorded(factory)
    cancel_asked = recorded(factory)
    sent = recorded(factory)
    running = recorded(factory)
    legacy = uuid.uuid4()
    with factory() as session, session.begin():
        request_cancel(session, cancelled)
        session.get_one(Job, cancel_asked).cancel_requested = True  # asked, not yet closed
        assert mark_job_sent(session, sent)
        assert not mark_job_sent(session, sent)  # stamped once
        session.get_one(Job, running).status = JobStatus.running
        # Written without create_job (an older client): the column's default counts it sent.
        session.add(Job(id=legacy, kind="score", params={}))
    backdate(factory, [orphan, cancelled, cancel_asked, sent, running, legacy], OLD)
    assert sent_at(factory, orphan) is None and sent_at(factory, legacy) is not None

    with factory() as session, session.begin():
        [claimed] = unsent_jobs(session)
    assert (claimed.id, claimed.kind) == (orphan, "score")
    assert utcnow() - claimed.created_at >= OLD - timedelta(seconds=5)
    with factory() as session, session.begin():
        assert unsent_jobs(session) == []  # claimed just now: nobody else sends it
    with factory() as session, session.begin():
        # Its claimer died before sending it: after another ORPHAN_AFTER it is claimed again,
        # with the young job, old enough by then; the others never.
        claimed_later = unsent_jobs(session, now=utcnow() + OLD)
        assert [job.id for job in claimed_later] == [orphan, young]  # oldest first
        assert mark_job_sent(session, orphan) and mark_job_sent(session, young)
    with factory() as session, session.begin():
        assert unsent_jobs(session, now=utcnow() + 3 * OLD) == []  # sent: never again


def test_young_jobs_wait_for_the_threshold(factory: sessionmaker[Session]) -> None:
    job_id = recorded(factory)
    backdate(factory, [job_id], ORPHAN_AFTER - timedelta(seconds=30))
    with factory() as session, session.begin():
        assert unsent_jobs(session) == []
        assert [job.id for job in unsent_jobs(session, timedelta(seconds=10))] == [job_id]


def test_two_claimers_never_take_the_same_job(pg_factory: sessionmaker[Session]) -> None:
    jobs = [recorded(pg_factory) for _ in range(12)]
    backdate(pg_factory, jobs, OLD)
    with pg_factory() as first, first.begin():
        mine = {job.id for job in unsent_jobs(first, limit=5)}  # still uncommitted
        with pg_factory() as second, second.begin():
            theirs = {job.id for job in unsent_jobs(second)}  # skips the locked ones
        assert len(mine) == 5 and len(theirs) == 7 and not mine & theirs
    assert mine | theirs == set(jobs)
    with pg_factory() as session, session.begin():
        assert unsent_jobs(session) == []


# --- sending on the real broker (PostgreSQL) ------------------------------------------------


def test_an_orphan_is_sent_exactly_once_by_concurrent_senders(
    pg_factory: sessionmaker[Session], client: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    orphans = [record_job(pg_factory, ScoreParams(prompt="a fox", images=["ab" * 32]), ORIGIN)]
    orphans += [record_job(pg_factory, StatsParams(), ORIGIN) for _ in range(7)]
    young = record_job(pg_factory, StatsParams(), ORIGIN)
    cancelled = record_job(pg_factory, StatsParams(), ORIGIN)
    done = submit_job(client, pg_factory, StatsParams(), ORIGIN)  # recorded and sent
    with pg_factory() as session, session.begin():
        request_cancel(session, cancelled)
    backdate(pg_factory, [*orphans, cancelled, done], OLD)
    assert broker_task_ids() == Counter({str(done): 1})

    start = threading.Barrier(2)
    rounds: list[list[Any]] = []

    def bot() -> None:  # two bot processes' timed rounds at the same moment
        start.wait()
        rounds.append(send_unsent_jobs(client, pg_factory))

    with caplog.at_level(logging.WARNING, logger="jobqueue.submit"):
        threads = [threading.Thread(target=bot) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    resent = [job for batch in rounds for job in batch]
    assert sorted(str(job.job_id) for job in resent) == sorted(map(str, orphans))
    assert all(job.sent and job.age >= OLD - timedelta(seconds=5) for job in resent)
    assert broker_task_ids() == Counter({str(job_id): 1 for job_id in [*orphans, done]})
    with pg_factory() as session:
        rows = {job.id: job for job in session.scalars(select(Job))}
    assert all(rows[job_id].sent_at is not None for job_id in orphans)
    assert rows[young].sent_at is None and rows[young].status == JobStatus.queued
    assert rows[cancelled].status == JobStatus.cancelled and rows[cancelled].sent_at is None
    assert all(rows[job_id].status == JobStatus.queued for job_id in orphans)
    # One warning per job (id, kind, age), and nothing of its parameters or origin.
    warnings = [r.getMessage() for r in caplog.records if "never sent" in r.getMessage()]
    assert len(warnings) == len(orphans)
    assert any(str(orphans[0]) in w and "(score)" in w and " s ago" in w for w in warnings)
    assert not any("a fox" in w or "ab" * 32 in w for w in warnings)

    assert send_unsent_jobs(client, pg_factory) == []  # sent ones are never sent again
    backdate(pg_factory, [young], OLD)
    assert [job.job_id for job in send_unsent_jobs(client, pg_factory)] == [young]
    assert broker_task_ids()[str(young)] == 1


def test_a_sent_job_is_stamped_and_never_resent(
    pg_factory: sessionmaker[Session], client: Celery
) -> None:
    before = utcnow()
    job_id = record_job(pg_factory, StatsParams(), ORIGIN)
    assert sent_at(pg_factory, job_id) is None
    enqueue_job(client, pg_factory, "stats", job_id)
    stamped = sent_at(pg_factory, job_id)
    assert stamped is not None and before <= stamped <= utcnow()
    backdate(pg_factory, [job_id], 10 * OLD)
    assert send_unsent_jobs(client, pg_factory) == []
    assert broker_task_ids() == Counter({str(job_id): 1})


class RefusingBroker:
    """A Celery client whose broker is down."""

    def send_task(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("connection refused")


def test_an_orphan_the_broker_refuses_fails_and_its_failure_is_posted(
    pg_factory: sessionmaker[Session],
) -> None:
    job_id = record_job(pg_factory, StatsParams(), ORIGIN)
    gone = recorded(pg_factory, "retired_kind", requested_by=5, channel_id=10)
    backdate(pg_factory, [job_id, gone], OLD)
    resent = send_unsent_jobs(RefusingBroker(), pg_factory)  # type: ignore[arg-type]
    assert {(job.job_id, job.sent) for job in resent} == {(job_id, False), (gone, False)}
    with pg_factory() as session:
        for failed, reason in (
            (job_id, "the job queue is unavailable; try again later"),
            (gone, UNKNOWN_KIND_MESSAGE),
        ):
            job = session.get_one(Job, failed)
            assert job.status == JobStatus.failed and job.sent_at is None
            [row] = session.scalars(select(OutboxMessage).where(OutboxMessage.job_id == failed))
            assert row.kind == "job_failed" and row.payload["error"] == reason
            assert row.channel_id == 10 and row.payload["requested_by"] == 5
    assert send_unsent_jobs(RefusingBroker(), pg_factory) == []  # type: ignore[arg-type]


# --- migration 0007 -------------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    name = f"{make_url(TEST_DATABASE_URL).database}_0007"
    url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    with psycopg.connect(libpq_dsn(TEST_DATABASE_URL, "postgres"), autocommit=True) as conn:
        conn.execute(drop)
    ensure_database(url)
    yield url
    with psycopg.connect(libpq_dsn(TEST_DATABASE_URL, "postgres"), autocommit=True) as conn:
        conn.execute(drop)


def test_0007_counts_old_jobs_sent_and_goes_down_and_up(empty_url: str) -> None:
    upgrade(empty_url, "0006")
    engine = make_engine(empty_url)
    created = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    old = uuid.uuid4()
    try:
        with engine.begin() as connection:
            insert = text(
                "INSERT INTO jobs (id, kind, status, progress, progress_message, params,"
                " cancel_requested, attempts, created_at, updated_at) VALUES (:id, 'score',"
                " 'queued', 0, 'queued', '{}', false, 0, :at, :at)"
            ).bindparams(bindparam("id", type_=Uuid()), bindparam("at", type_=UTCDateTime()))
            connection.execute(insert, {"id": old, "at": created})
        upgrade(empty_url)
        factory = make_session_factory(engine)
        with factory() as session, session.begin():
            assert session.get_one(Job, old).sent_at == created  # as old as the job
            assert unsent_jobs(session) == []  # queued for a year, but not an orphan
            fresh = create_job(session, "score", {}).id
        with factory() as session:
            assert session.get_one(Job, fresh).sent_at is None
        downgrade(empty_url, "0006")
        with engine.connect() as connection:
            columns = connection.execute(text("SELECT * FROM jobs")).keys()
            assert "sent_at" not in columns and "created_at" in columns
        upgrade(empty_url)
        with factory() as session:
            stamps = {
                job_id: stamp for job_id, stamp in session.execute(select(Job.id, Job.sent_at))
            }
        assert stamps[old] == created and stamps[fresh] is not None
    finally:
        engine.dispose()
