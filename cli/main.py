"""The ``hps`` command line. Subcommands import their dependencies lazily, so that
``hps db ...`` never loads torch and ``hps score ...`` never needs a database."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

import cli.commands.adapt
import cli.commands.benchmark
import cli.commands.config
import cli.commands.db
import cli.commands.eval
import cli.commands.exchange
import cli.commands.jobs
import cli.commands.leaderboard
import cli.commands.models
import cli.commands.outbox
import cli.commands.registry
import cli.commands.run
import cli.commands.score
import cli.commands.stats
import cli.commands.train
import cli.commands.worker
from cli.errors import CommandError

CommandRegistrar = Callable[[argparse._SubParsersAction], None]

# The command groups of `hps --help`, in order: a title and the modules of cli/commands/ (each
# module adds its commands with `register`).
GROUPS: list[tuple[str, list[ModuleType]]] = [
    (
        "run the platform",
        [cli.commands.run, cli.commands.worker, cli.commands.db, cli.commands.config],
    ),
    (
        "operate it",
        [
            cli.commands.jobs,
            cli.commands.outbox,
            cli.commands.registry,
            cli.commands.stats,
            cli.commands.leaderboard,
        ],
    ),
    ("exchange datasets", [cli.commands.exchange]),
    (
        "the science",
        [
            cli.commands.score,
            cli.commands.train,
            cli.commands.eval,
            cli.commands.adapt,
            cli.commands.benchmark,
            cli.commands.models,
        ],
    ),
]


def build_parser() -> argparse.ArgumentParser:
    """The full ``hps`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="hps",
        description="Human Preference Score platform: harvest, learn, use, administer.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    lines = ["command groups:"]
    for title, modules in GROUPS:
        names: list[str] = []
        for module in modules:
            before = set(subcommands.choices)
            register: CommandRegistrar = module.register
            register(subcommands)
            names += [name for name in subcommands.choices if name not in before]
        lines.append(f"  {title + ':':<20}{', '.join(names)}")
    parser.epilog = "\n".join(lines)
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
