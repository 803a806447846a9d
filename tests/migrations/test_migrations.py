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


def test_0004_makes_models_global_and_keeps_each_rows_guild(empty_url: str) -> None:
    """Data written before guild scoping: versions become global, scores take their
    generation's guild and requester, guilds start private; down and up again keep it."""
    from sqlalchemy import text

    upgrade(empty_url, "0003")
    engine = make_engine(empty_url)
    now = "2026-01-01 00:00:00+00:00"
    try:
        with engine.begin() as connection:
            for statement in (
                "INSERT INTO guild_configs (guild_id, consent_mode, admin_role_ids, created_at,"
                " updated_at) VALUES (11, 'opt_out', '[]', :now, :now)",
                "INSERT INTO discord_users (id, opted_out, created_at) VALUES (5, false, :now)",
                "INSERT INTO prompts (id, text, normalized_hash, created_at)"
                " VALUES (1, 'a fox', 'h1', :now)",
                "INSERT INTO generations (id, source_message_id, guild_id, channel_id, prompt_id,"
                " requester_id, generator, params, created_at)"
                " VALUES (1, 100, 11, 12, 1, 5, 'bot', '{}', :now)",
                "INSERT INTO images (id, generation_id, position, sha256, storage_key, width,"
                " height, phash, created_at) VALUES (1, 1, 0, 'aa', 'k', 8, 8, '', :now)",
                "INSERT INTO model_versions (id, kind, name, checkpoint_key, architecture,"
                " status, metrics, trained_on, created_at)"
                " VALUES (1, 'hps', 'old', 'k', 'tiny', 'active', '{}', '{}', :now)",
                "INSERT INTO scores (id, image_id, model_version_id, score, created_at)"
                " VALUES (1, 1, 1, 21.5, :now)",
            ):
                connection.execute(text(statement), {"now": now})
    finally:
        engine.dispose()

    def state() -> tuple[object, ...]:
        engine = make_engine(empty_url)
        try:
            with engine.connect() as connection:
                return (
                    connection.execute(text("SELECT guild_id, status FROM model_versions")).all(),
                    connection.execute(
                        text("SELECT guild_id, requester_id, sample FROM scores")
                    ).all(),
                    connection.execute(text("SELECT guild_id FROM generations")).all(),
                    connection.execute(text("SELECT sharing FROM guild_configs")).all(),
                )
        finally:
            engine.dispose()

    upgrade(empty_url)
    expected = ([(None, "active")], [(11, 5, 1)], [(11,)], [("private",)])
    assert state() == expected
    downgrade(empty_url, "0003")
    upgrade(empty_url)
    assert state() == expected
    assert differences(empty_url) == []
