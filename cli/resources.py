"""The database engine, session factory and image store of one command, built from the
settings by :class:`db.resources.Resources` (as the worker's ``Runtime`` builds them) and
released when the command ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from config import Settings, get_settings

if TYPE_CHECKING:
    from db.resources import Resources


@contextmanager
def open_resources(settings: Settings | None = None) -> Iterator[Resources]:
    """Resources from ``settings`` (default: the effective settings), each built on first use;
    the engine's connections are closed on the way out."""
    from db.resources import Resources  # sqlalchemy only for the commands that use it

    resources = Resources(settings or get_settings())
    try:
        yield resources
    finally:
        resources.dispose()
