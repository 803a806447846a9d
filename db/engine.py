"""Engine and session factories: sync for workers and the CLI, async for the bot.

PostgreSQL URLs are normalised to psycopg 3 (``postgresql+psycopg://``); SQLite gets WAL mode,
a busy timeout and enforced foreign keys so that the embedded default behaves like the real
thing (cascading deletes, concurrent readers while one writer works).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_S = 30
# Deadlock and serialization failures: the transaction can simply be run again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_S = 0.25

T = TypeVar("T")
log = logging.getLogger(__name__)


def normalize_url(url: str | URL, *, use_async: bool = False) -> URL:
    """Pick the driver: psycopg 3 for PostgreSQL, pysqlite/aiosqlite for SQLite."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite" if use_async else "sqlite+pysqlite")
    raise ValueError(f"DATABASE_URL: unsupported database {backend!r} (use postgresql or sqlite)")


def _prepare_sqlite_file(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, open transactions (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # A deferred transaction that reads and then writes can fail with "database is locked"
    # without waiting when another writer committed meanwhile; taking the write lock up
    # front makes concurrent writers queue on the busy timeout instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _configure_sqlite(engine: Engine) -> None:
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin_immediate)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """A sync engine (workers, CLI, migrations) with pool health checks."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed)
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_S})
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    # No pool pre-ping (a round trip per checkout): callers run work through
    # run_transaction, which retries on a dropped connection wherever it happens.
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(parsed, **kwargs)


def make_async_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An async engine for the bot (psycopg 3 async / aiosqlite)."""
    parsed = normalize_url(url, use_async=True)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed)
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_S})
        engine = create_async_engine(parsed, **kwargs)
        _configure_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(parsed, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (rows are handed to callers)."""
    return sessionmaker(engine, expire_on_commit=False)


def make_async_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Async sessions for the bot; call domain operations with ``session.run_sync``."""
    return async_sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def is_retryable(exc: BaseException) -> bool:
    """A dropped connection (database restart, network blip) or a deadlock/serialization
    failure: running the whole transaction again is safe for idempotent work."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def run_transaction(
    factory: sessionmaker[Session],
    work: Callable[[Session], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> T:
    """Run ``work(session)`` in one transaction, retrying the whole of it (with exponential
    backoff) when the connection dropped or the database asked for a retry. ``work`` must be
    idempotent, as every db/ operation is."""
    for attempt in range(1, attempts + 1):
        try:
            with factory() as session, session.begin():
                return work(session)
        except DBAPIError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            log.warning("database error, retrying (%d/%d): %s", attempt, attempts, exc.orig)
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


async def run_transaction_async(
    factory: async_sessionmaker[AsyncSession],
    work: Callable[[Session], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> T:
    """The async twin of :func:`run_transaction` for the bot: ``work`` is a sync db/
    operation run through ``AsyncSession.run_sync``."""
    for attempt in range(1, attempts + 1):
        try:
            async with factory() as session, session.begin():
                return await session.run_sync(work)
        except DBAPIError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            log.warning("database error, retrying (%d/%d): %s", attempt, attempts, exc.orig)
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
