"""The database engine, session factory and image store of one command, built from the
settings by :class:`db.resources.Resources` (as the worker's ``Runtime`` builds them) and
released when the command ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cli.output import print_json
from config import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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


def print_transaction(work: Callable[[Session], Any], settings: Settings | None = None) -> int:
    """Run ``work`` in one (retried) transaction and print what it returns as JSON: the body of
    the commands that change or show rows. Returns the exit status, 0."""
    from db.engine import run_transaction

    with open_resources(settings) as resources:
        result = run_transaction(resources.factory, work)
    print_json(result)
    return 0
