"""Shared fixtures: a real PostgreSQL test database (migrated once per run, emptied after each
test) and a migrated SQLite file per test for the embedded default."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory
from migrations.runner import upgrade

TEST_DATABASE_URL = os.environ.get(
    "HPS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/hps_test"
)
TABLES = (
    "scores, choices, images, generations, prompts, outbox, jobs, model_versions, "
    "harvest_channels, guild_configs, discord_users, arena_settings, gate_runs"
)


def libpq_dsn(url: str, database: str | None = None) -> str:
    """A psycopg connection string for a SQLAlchemy URL (optionally another database)."""
    parsed = make_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist yet."""
    name = make_url(url).database
    with psycopg.connect(libpq_dsn(url, "postgres"), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def reset_schema(url: str) -> None:
    """Drop everything in the public schema of ``url``."""
    with psycopg.connect(libpq_dsn(url), autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


@pytest.fixture(scope="session")
def pg_url() -> str:
    ensure_database(TEST_DATABASE_URL)
    reset_schema(TEST_DATABASE_URL)
    upgrade(TEST_DATABASE_URL)
    return TEST_DATABASE_URL


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_factory(pg_engine: Engine) -> Iterator[sessionmaker[Session]]:
    yield make_session_factory(pg_engine)
    with pg_engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'hps.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def sqlite_factory(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def factory(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    """Session factory for each supported backend (tests run on both)."""
    name = "pg_factory" if request.param == "postgresql" else "sqlite_factory"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
