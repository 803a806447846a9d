"""Models and migrations agree; upgrade/downgrade round-trips; concurrent upgrades serialise."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from db.engine import make_engine
from db.models import Base
from migrations.runner import current_revision, downgrade, head_revision, upgrade
from tests.conftest import TEST_DATABASE_URL, ensure_database, libpq_dsn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"hps_test_mig_{abs(hash(request.node.name)) % 10**8}"
    url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(libpq_dsn(TEST_DATABASE_URL, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    ensure_database(url)
    yield url
    with psycopg.connect(libpq_dsn(TEST_DATABASE_URL, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.sqlite3'}"
    return str(request.getfixturevalue("fresh_pg_url"))


def differences(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_models_and_migrations_agree(empty_url: str) -> None:
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    assert differences(empty_url) == []


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "base")
    assert table_names(empty_url) <= {"alembic_version"}
    assert current_revision(empty_url) is None
    upgrade(empty_url)
    assert set(Base.metadata.tables) <= table_names(empty_url)
    assert differences(empty_url) == []


def test_concurrent_upgrades_are_serialised(fresh_pg_url: str) -> None:
    script = "import sys; from migrations.runner import upgrade; upgrade(sys.argv[1])"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, fresh_pg_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], outputs
    assert current_revision(fresh_pg_url) == head_revision()
    assert differences(fresh_pg_url) == []
