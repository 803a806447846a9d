"""``hps config``: the effective settings, secrets redacted."""

from __future__ import annotations

import argparse
import json

from config import get_settings


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps config`` to the ``hps`` parser."""
    config = subcommands.add_parser("config", help="print the effective settings (redacted)")
    config.set_defaults(handler=cmd_config)


def cmd_config(_args: argparse.Namespace) -> int:
    """Print the effective settings as JSON (secrets redacted)."""
    print(json.dumps(get_settings().redacted(), indent=2, default=str))
    return 0
