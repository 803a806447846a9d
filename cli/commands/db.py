"""``hps db upgrade | downgrade | current``: the database schema (Alembic)."""

from __future__ import annotations

import argparse

from config import get_settings


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps db`` to the ``hps`` parser."""
    database = subcommands.add_parser("db", help="database schema (Alembic)")
    actions = database.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = actions.add_parser("upgrade", help="apply migrations (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=cmd_db_upgrade)
    down = actions.add_parser("downgrade", help="revert migrations to REVISION")
    down.add_argument("revision")
    down.set_defaults(handler=cmd_db_downgrade)
    current = actions.add_parser("current", help="print the schema revision")
    current.set_defaults(handler=cmd_db_current)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply migrations up to ``args.revision``."""
    from migrations.runner import current_revision, upgrade

    settings = get_settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at revision {current_revision(settings.database_url)}")
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    """Revert migrations down to ``args.revision``."""
    from migrations.runner import current_revision, downgrade

    settings = get_settings()
    downgrade(settings.database_url, args.revision)
    print(f"database at revision {current_revision(settings.database_url)}")
    return 0


def cmd_db_current(_args: argparse.Namespace) -> int:
    """Print the database's revision and the newest one."""
    from migrations.runner import current_revision, head_revision

    revision = current_revision(get_settings().database_url)
    print(f"current: {revision or '(empty database)'}  head: {head_revision()}")
    return 0
