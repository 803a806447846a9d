"""A dropped database connection (server restart, idle kill) costs a retry, not data."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from db.engine import (
    make_async_engine,
    make_async_session_factory,
    make_engine,
    make_session_factory,
    run_transaction,
    run_transaction_async,
)
from db.errors import UserOptedOut
from db.ingest import record_generation
from db.models import Generation
from db.privacy import opt_out
from tests.conftest import libpq_dsn
from tests.factories import make_generation


def backend_pid(session: Session) -> int:
    return int(session.scalar(text("SELECT pg_backend_pid()")) or 0)


def kill_backend(url: str, pid: int) -> None:
    with psycopg.connect(libpq_dsn(url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_killed_connection_is_retried_once_and_writes_once(
    pg_url: str, pg_factory: object
) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    factory = make_session_factory(engine)
    try:
        pid = run_transaction(factory, backend_pid)  # the pool now holds this connection
        kill_backend(pg_url, pid)
        generation = make_generation()
        calls: list[int] = []

        def work(session: Session) -> int:
            calls.append(1)
            return record_generation(session, generation).generation_id

        generation_id = run_transaction(factory, work, backoff_s=0.01)
        assert len(calls) == 2  # first attempt hit the dead connection
        assert run_transaction(factory, backend_pid) != pid
        with factory() as session:
            assert session.scalar(select(func.count()).select_from(Generation)) == 1
            assert session.scalar(select(Generation.id)) == generation_id
    finally:
        engine.dispose()


def test_domain_errors_are_not_retried(pg_factory: object) -> None:
    calls: list[int] = []

    def work(session: Session) -> None:
        calls.append(1)
        opt_out(session, 9)
        record_generation(session, make_generation(requester_id=9))

    with pytest.raises(UserOptedOut):
        run_transaction(pg_factory, work)  # type: ignore[arg-type]
    assert calls == [1]


async def test_the_bot_side_retries_too(pg_url: str, pg_factory: object) -> None:
    engine = make_async_engine(pg_url, pool_size=1, max_overflow=0)
    factory = make_async_session_factory(engine)
    try:
        pid = await run_transaction_async(factory, backend_pid)
        kill_backend(pg_url, pid)
        generation = make_generation()
        recorded = await run_transaction_async(
            factory, lambda session: record_generation(session, generation), backoff_s=0.01
        )
        assert len(recorded.image_ids) == 4
        assert await run_transaction_async(factory, backend_pid) != pid
    finally:
        await engine.dispose()
