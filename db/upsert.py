"""Dialect-aware ``INSERT ... ON CONFLICT`` (PostgreSQL and SQLite share the syntax)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session, model: Any) -> Any:
    """An INSERT for ``model``'s table that supports ``on_conflict_do_*`` on this dialect.

    The statement targets the Core table, not the mapped class, so it skips the ORM's bulk
    persistence machinery (several times slower per row) and stays cacheable.
    """
    return insert_for_dialect(session.get_bind().dialect.name, model)


def insert_for_dialect(dialect: str, model: Any) -> Any:
    """Like :func:`insert_for`, for a dialect named ``postgresql`` or ``sqlite``."""
    table = getattr(model, "__table__", model)
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upserts are implemented for postgresql and sqlite, not {dialect}")


def is_postgresql(session: Session) -> bool:
    """Whether the session talks to PostgreSQL (NOTIFY, SKIP LOCKED, advisory locks)."""
    return session.get_bind().dialect.name == "postgresql"
