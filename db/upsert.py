"""Dialect-aware ``INSERT ... ON CONFLICT`` (PostgreSQL and SQLite share the syntax)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session, table: Any) -> Any:
    """An INSERT construct for ``table`` that supports ``on_conflict_do_*`` on this dialect."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upserts are implemented for postgresql and sqlite, not {dialect}")


def is_postgresql(session: Session) -> bool:
    """Whether the session talks to PostgreSQL (NOTIFY, SKIP LOCKED, advisory locks)."""
    return session.get_bind().dialect.name == "postgresql"
