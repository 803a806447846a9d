"""The ``hps`` command line. Subcommands import their dependencies lazily, so that
``hps db ...`` never loads torch and ``hps score ...`` never needs a database."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import cli.exchange_commands
import hps.cli
from cli import jobs_commands, ops_commands, platform_commands

CommandRegistrar = Callable[[argparse._SubParsersAction], None]

REGISTRARS: list[CommandRegistrar] = [
    platform_commands.register,
    jobs_commands.register,
    ops_commands.register,
    cli.exchange_commands.register,
    hps.cli.register,
]


class CommandError(Exception):
    """An expected failure: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The full ``hps`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="hps",
        description="Human Preference Score platform: harvest, learn, use, administer.",
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hps`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        print("hps: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, never a traceback, for expected failures
        if not _is_expected(exc):
            raise
        print(f"hps {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    return int(result or 0)


def describe_error(exc: Exception) -> str:
    """One line for the user: the driver's message for database errors, no SQL, no URLs."""
    if isinstance(exc, RecursionError):  # e.g. a JSON document nested thousands deep
        return "the input is nested too deeply to read"
    original = getattr(exc, "orig", None)
    message = str(original if original is not None else exc)
    if original is not None:
        message = f"database unavailable: {message}"
    return " ".join(message.split())


def _is_expected(exc: Exception) -> bool:
    from config import SettingsError

    expected: tuple[type[Exception], ...] = (
        CommandError,
        SettingsError,
        ValueError,
        OSError,
        LookupError,
        RecursionError,
    )
    try:
        from sqlalchemy.exc import OperationalError

        expected += (OperationalError,)
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, expected)


if __name__ == "__main__":
    sys.exit(main())
