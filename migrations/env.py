"""Alembic environment: metadata from db.models, URL from Settings (or the caller).

On PostgreSQL every run holds a transaction-level advisory lock, so concurrent upgrades (two
containers starting at once) are serialised: the second waits, then finds nothing to do.
"""

from __future__ import annotations

import warnings
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.exc import SAWarning

from db.engine import make_engine
from db.models import Base

MIGRATION_LOCK_KEY = 0x4850_5350  # "HPSP": any constant shared by all migrators

# SQLite cannot reflect the expression index of model_versions (one active version per kind
# and guild); batch mode reflects that table as the parent of scores. Expected, and the index
# is never recreated from a reflection.
warnings.filterwarnings(
    "ignore",
    message="Skipped unsupported reflection of expression-based index",
    category=SAWarning,
)

target_metadata = Base.metadata


def _database_url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from config import get_settings

    return get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_database_url())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection: Any) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode recreates a table to alter it (copy, DROP, rename); with foreign keys on,
        # that DROP deletes the rows of every ON DELETE CASCADE child (a downgrade of
        # model_versions would wipe scores). The pragma only takes effect outside a
        # transaction, so it is set on the driver connection before Alembic begins.
        connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
    try:
        _migrate(connection)
    finally:
        if sqlite:
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _migrate(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copes
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        context.run_migrations()
        if connection.dialect.name == "sqlite":  # what the copies kept must still hold
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"migration left dangling foreign keys: {broken[:5]}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
