"""Jobs through their life, and the outbox row + NOTIFY written with the result."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.errors import JobNotFound, JobStateError
from db.jobs import (
    create_job,
    fail_job,
    finish_job,
    mark_cancelled,
    request_cancel,
    start_job,
    update_job_progress,
)
from db.models import Job, JobStatus, OutboxMessage
from db.outbox import (
    OUTBOX_CHANNEL,
    claim_pending_outbox,
    mark_outbox_delivered,
    record_outbox_failure,
    write_outbox,
)
from tests.conftest import libpq_dsn


def new_job(factory: sessionmaker[Session], **kwargs: object) -> uuid.UUID:
    with factory() as session, session.begin():
        job = create_job(
            session, "score", {"prompt": "a cat"}, channel_id=10, guild_id=20, **kwargs
        )  # type: ignore[arg-type]
        return job.id


def test_job_life_cycle_writes_result_and_one_outbox_row(factory: sessionmaker[Session]) -> None:
    job_id = new_job(factory, requested_by=5, interaction_token="tok")
    with factory() as session, session.begin():
        job = start_job(session, job_id)
        assert job.status == JobStatus.running and job.attempts == 1
        assert update_job_progress(session, job_id, 0.5, "half way")
    with factory() as session:
        job = session.get_one(Job, job_id)
        assert (job.progress, job.progress_message) == (0.5, "half way")
    with factory() as session, session.begin():
        assert finish_job(session, job_id, {"score": 23.1}, outbox_kind="score_result")
    # A redelivered task finishing again changes nothing and writes no second message.
    with factory() as session, session.begin():
        assert not finish_job(session, job_id, {"score": 99.0})
    with factory() as session:
        job = session.get_one(Job, job_id)
        assert job.status == JobStatus.succeeded and job.result == {"score": 23.1}
        assert job.progress == 1.0 and job.finished_at is not None
        row = session.scalars(select(OutboxMessage)).one()
        assert row.kind == "score_result" and row.job_id == job_id
        assert row.payload == {
            "job_id": str(job_id),
            "job_kind": "score",
            "score": 23.1,
            "requested_by": 5,
        }
        assert (row.channel_id, row.guild_id) == (10, 20)
    with factory() as session, session.begin():
        with pytest.raises(JobStateError, match="already succeeded"):
            start_job(session, job_id)


def test_failure_stores_a_readable_message_and_tells_the_user(
    factory: sessionmaker[Session],
) -> None:
    job_id = new_job(factory)
    with factory() as session, session.begin():
        start_job(session, job_id)
        assert fail_job(session, job_id, "the image is corrupt: truncated PNG")
    with factory() as session:
        job = session.get_one(Job, job_id)
        assert job.status == JobStatus.failed
        assert job.error == "the image is corrupt: truncated PNG"
        row = session.scalars(select(OutboxMessage)).one()
        assert row.kind == "job_failed" and row.payload["error"] == job.error


def test_cancel_queued_and_running_jobs(factory: sessionmaker[Session]) -> None:
    queued = new_job(factory)
    running = new_job(factory)
    with factory() as session, session.begin():
        start_job(session, running)
        assert request_cancel(session, queued).status == JobStatus.cancelled
        assert request_cancel(session, running).status == JobStatus.running
    with factory() as session, session.begin():
        assert update_job_progress(session, running, 0.3, "step 3") is False
        mark_cancelled(session, running)
    with factory() as session:
        assert session.get_one(Job, running).status == JobStatus.cancelled
    with factory() as session, session.begin(), pytest.raises(JobStateError):
        start_job(session, queued)
    with factory() as session, session.begin(), pytest.raises(JobNotFound):
        start_job(session, uuid.uuid4())


def test_outbox_claim_and_delivery(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        first = write_outbox(session, "notice", {"text": "a"}, channel_id=1)
        second = write_outbox(session, "notice", {"text": "b"}, channel_id=1, dedupe_key="k")
        assert write_outbox(session, "notice", {"text": "b"}, channel_id=1, dedupe_key="k") is None
    with factory() as session, session.begin():
        rows = claim_pending_outbox(session)
        assert [row.id for row in rows] == [first, second]
        assert first is not None and second is not None
        assert mark_outbox_delivered(session, first)
        outcome = record_outbox_failure(session, second, "server_error: HTTP 503 from Discord")
        assert not outcome.dead and outcome.retry_at is not None
    with factory() as session, session.begin():
        assert claim_pending_outbox(session) == []  # the failed row backs off
        assert not mark_outbox_delivered(session, first)  # stamped once only
    with factory() as session, session.begin():
        rows = claim_pending_outbox(session, now=outcome.retry_at)
        assert [(row.id, row.attempts, row.last_error) for row in rows] == [
            (second, 2, "server_error: HTTP 503 from Discord")
        ]


def test_two_deliverers_never_claim_the_same_row(pg_factory: sessionmaker[Session]) -> None:
    with pg_factory() as session, session.begin():
        for n in range(6):
            write_outbox(session, "notice", {"n": n}, channel_id=1)
    with pg_factory() as a, a.begin(), pg_factory() as b, b.begin():
        claimed_a = {row.id for row in claim_pending_outbox(a, limit=4)}
        claimed_b = {row.id for row in claim_pending_outbox(b, limit=4)}
    assert len(claimed_a) == 4 and len(claimed_b) == 2
    assert not claimed_a & claimed_b


def test_notify_is_sent_on_commit_only(pg_url: str, pg_factory: sessionmaker[Session]) -> None:
    with psycopg.connect(libpq_dsn(pg_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        job_id = new_job(pg_factory)
        with pg_factory() as session:
            session.begin()
            start_job(session, job_id)
            finish_job(session, job_id, {"score": 1.0})
            session.flush()
            assert list(listener.notifies(timeout=0.3)) == []  # not before the commit
            session.commit()
        received = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
        with pg_factory() as session:
            outbox_id = session.scalar(select(OutboxMessage.id))
        assert received == [str(outbox_id)]


def test_rolled_back_result_sends_nothing(pg_url: str, pg_factory: sessionmaker[Session]) -> None:
    with psycopg.connect(libpq_dsn(pg_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        job_id = new_job(pg_factory)
        with pg_factory() as session:
            session.begin()
            finish_job(session, job_id, {"score": 1.0})
            session.rollback()
        assert list(listener.notifies(timeout=0.5)) == []
    with pg_factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        assert session.get_one(Job, job_id).status == JobStatus.queued


def test_concurrent_finish_writes_one_result(pg_factory: sessionmaker[Session]) -> None:
    job_id = new_job(pg_factory)
    barrier = threading.Barrier(2)
    outcomes: list[bool] = []

    def finish(value: float) -> None:
        with pg_factory() as session:
            barrier.wait()
            with session.begin():
                outcomes.append(finish_job(session, job_id, {"score": value}))

    threads = [threading.Thread(target=finish, args=(v,)) for v in (1.0, 2.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == [False, True]
    with pg_factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_percentiles_against_the_community(factory: sessionmaker[Session]) -> None:
    from db.ingest import record_generation
    from db.models import ModelKind
    from db.registry import register_model_version
    from db.scope import Scope
    from db.scores import percentiles, store_scores
    from tests.factories import make_generation

    with factory() as session, session.begin():
        version = register_model_version(
            session, kind=ModelKind.hps, name="p", checkpoint_key="k", architecture="tiny"
        )
        here = Scope.guild(7)
        assert percentiles(session, version.id, [1.0], here) == [None]
        ids = record_generation(session, make_generation(seeds=[1, 2, 3, 4])).image_ids
        assert (
            store_scores(session, version.id, dict(zip(ids, [10.0, 20.0, 30.0, 40.0], strict=True)))
            == 4
        )
        assert store_scores(session, version.id, {ids[0]: 99.0}) == 0  # kept, not duplicated
        assert percentiles(session, version.id, [5.0, 25.0, 40.0, 41.0], here) == [
            0.0,
            50.0,
            75.0,
            100.0,
        ]
        # Another server's images are not this community's: they do not move its percentiles.
        elsewhere = record_generation(
            session, make_generation(seeds=[5, 6], guild_id=8, requester_id=None)
        ).image_ids
        store_scores(session, version.id, dict(zip(elsewhere, [1.0, 1.5], strict=True)))
        assert percentiles(session, version.id, [25.0], here) == [50.0]
        assert percentiles(session, version.id, [1.2], Scope.guild(8)) == [50.0]


def test_a_big_community_s_percentiles_come_from_its_fixed_sample(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    import db.scores
    from db.ingest import record_generation
    from db.models import ModelKind
    from db.registry import register_model_version
    from db.scope import Scope
    from db.scores import SCORE_SAMPLES, percentiles, store_scores
    from tests.factories import make_generation

    here = Scope.guild(7)
    with factory() as session, session.begin():
        version = register_model_version(
            session, kind=ModelKind.hps, name="s", checkpoint_key="k", architecture="tiny"
        )
        ids: list[int] = []
        for n in range(12):
            ids += record_generation(
                session, make_generation(seeds=[4 * n + k for k in range(4)])
            ).image_ids
        scores = {image_id: float(image_id % 97) for image_id in ids}
        store_scores(session, version.id, scores)
        sample = sorted(v for i, v in scores.items() if i % SCORE_SAMPLES == 0)
        assert len(sample) >= 2
        cut = sample[len(sample) // 2]
        exact = 100.0 * sum(v < cut for v in scores.values()) / len(scores)
        estimated = 100.0 * sum(v < cut for v in sample) / len(sample)
        assert percentiles(session, version.id, [cut], here) == [exact]
        # A community whose sample is big enough is estimated from its sample alone.
        monkeypatch.setattr(db.scores, "SAMPLED_PERCENTILE_MIN", len(sample))
        assert percentiles(session, version.id, [cut], here) == [estimated]


def test_a_user_s_job_limits_are_counted_per_guild(factory: sessionmaker[Session]) -> None:
    from db.errors import JobLimitReached
    from db.jobs import UserJobLimits, create_job

    limits = UserJobLimits(per_minute=10, max_open=2)
    with factory() as session, session.begin():
        for _ in range(2):
            create_job(session, "score", requested_by=5, guild_id=1, limits=limits)
    with factory() as session, session.begin():
        with pytest.raises(JobLimitReached):
            create_job(session, "score", requested_by=5, guild_id=1, limits=limits)
    # Another community's limits are its own: the user's jobs in guild 1 do not count there.
    with factory() as session, session.begin():
        create_job(session, "score", requested_by=5, guild_id=2, limits=limits)
