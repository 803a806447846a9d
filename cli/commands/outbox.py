"""``hps outbox dead | retry``: results the bot could not post (dead letters)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cli.resources import print_transaction

if TYPE_CHECKING:
    from db.models import OutboxMessage


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps outbox`` to the ``hps`` parser."""
    outbox = subcommands.add_parser("outbox", help="results the bot could not post (dead letters)")
    actions = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    dead = actions.add_parser("dead", help="dead letters, most recent first, with the reason")
    dead.add_argument("--limit", type=int, default=50)
    dead.set_defaults(handler=cmd_outbox_dead)
    retry = actions.add_parser("retry", help="post a dead letter again (from attempt one)")
    retry.add_argument("outbox_id", type=int)
    retry.set_defaults(handler=cmd_outbox_retry)


def outbox_view(row: OutboxMessage) -> dict[str, Any]:
    """An outbox row as printed by the CLI."""
    return {
        "id": row.id,
        "kind": row.kind,
        "job_id": str(row.job_id) if row.job_id else None,
        "guild_id": row.guild_id,
        "channel_id": row.channel_id,
        "attempts": row.attempts,
        "created_at": row.created_at.isoformat(),
        "dead_at": row.dead_at.isoformat() if row.dead_at else None,
        "next_attempt_at": row.next_attempt_at.isoformat(),
        "reason": row.last_error,
    }


def cmd_outbox_dead(args: argparse.Namespace) -> int:
    """Print the dead letters, most recent first."""
    from db.outbox import list_dead_letters

    return print_transaction(lambda s: [outbox_view(r) for r in list_dead_letters(s, args.limit)])


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    """Queue a dead letter for posting again; print it."""
    from db.outbox import requeue_dead_letter

    return print_transaction(lambda s: outbox_view(requeue_dead_letter(s, args.outbox_id)))
