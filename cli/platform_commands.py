"""``hps run``, ``hps bot``, ``hps demo``, ``hps db``, ``hps config``: operating the platform."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from config import Settings, get_settings


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add the platform subcommands to the ``hps`` parser."""
    run = subcommands.add_parser(
        "run",
        help="prepare the data store and run the product: the bot and a worker with "
        "DISCORD_TOKEN, else the offline demo",
    )
    run.add_argument(
        "--check", action="store_true", help="only prepare and check the data store, then exit"
    )
    add_demo_arguments(run)
    run.set_defaults(handler=cmd_run)

    bot = subcommands.add_parser("bot", help="run the Discord bot alone (workers run apart)")
    bot.set_defaults(handler=cmd_bot)

    demo = subcommands.add_parser(
        "demo", help="the offline demo: emulated Discord, a simulated community, the real product"
    )
    add_demo_arguments(demo)
    demo.set_defaults(handler=cmd_demo)

    database = subcommands.add_parser("db", help="database schema (Alembic)")
    db_sub = database.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=cmd_db_upgrade)
    down = db_sub.add_parser("downgrade", help="revert migrations to REVISION")
    down.add_argument("revision")
    down.set_defaults(handler=cmd_db_downgrade)
    current = db_sub.add_parser("current", help="print the schema revision")
    current.set_defaults(handler=cmd_db_current)

    config = subcommands.add_parser("config", help="print the effective settings (redacted)")
    config.set_defaults(handler=cmd_config)

    # hps stats lives in cli/ops_commands.py (row counts + statistics).


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from migrations.runner import current_revision, upgrade

    settings = get_settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at revision {current_revision(settings.database_url)}")
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    from migrations.runner import current_revision, downgrade

    settings = get_settings()
    downgrade(settings.database_url, args.revision)
    print(f"database at revision {current_revision(settings.database_url)}")
    return 0


def cmd_db_current(_args: argparse.Namespace) -> int:
    from migrations.runner import current_revision, head_revision

    revision = current_revision(get_settings().database_url)
    print(f"current: {revision or '(empty database)'}  head: {head_revision()}")
    return 0


def cmd_config(_args: argparse.Namespace) -> int:
    print(json.dumps(get_settings().redacted(), indent=2, default=str))
    return 0


def row_counts(settings: Settings) -> dict[str, int]:
    """Row counts of the main tables (see :func:`db.stats.row_counts`)."""
    from db.engine import make_engine, make_session_factory
    from db.stats import row_counts as count_rows

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            return count_rows(session)
    finally:
        engine.dispose()


def cmd_run(args: argparse.Namespace) -> int:
    from media.store import open_store
    from migrations.runner import current_revision, upgrade

    settings = get_settings()
    mode = "embedded defaults" if settings.uses_embedded_defaults else "external services"
    print(f"hps: starting on {mode}")
    for key, value in settings.redacted().items():
        if key in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "DISCORD_TOKEN"):
            print(f"  {key} = {value or '(unset)'}")
    upgrade(settings.database_url)
    print(f"  database schema at revision {current_revision(settings.database_url)}")
    store = open_store(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)
    probe = store.put(b"hps storage probe")
    store.delete(probe)
    print(f"  image store writable ({type(store).__name__})")
    print("  data: " + ", ".join(f"{k}={v}" for k, v in row_counts(settings).items()))
    if args.check:
        print("hps: ready")
        return 0
    if not _token(settings):
        print("hps: ready; no DISCORD_TOKEN, so here is the offline demo (Ctrl-C to stop)")
        return cmd_demo(args)
    return run_bot_and_worker(settings)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--generations",
        type=int,
        default=120,
        help="generations each guild's community posts (120)",
    )
    parser.add_argument(
        "--demo-dir", type=Path, default=None, help="the demo's own data (default DATA_DIR/demo)"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """The offline demo, in a folder of its own (it never touches the configured database)."""
    from sandbox.demo import run_demo

    if args.generations < 20:
        raise ValueError("--generations must be at least 20 (training needs held-out prompts)")
    settings = get_settings()
    run_demo(args.demo_dir or settings.hps_data_dir / "demo", generations=args.generations)
    return 0


def cmd_bot(_args: argparse.Namespace) -> int:
    """The bot alone: the compose ``bot`` service, or any deployment with separate workers."""
    from cli.main import CommandError
    from config.logging_setup import configure_logging

    settings = get_settings()
    token = _token(settings)
    if not token:
        raise CommandError("DISCORD_TOKEN is not set (put it in .env)")
    configure_logging(settings)  # LOG_FORMAT text|json, secrets redacted
    run_bot(settings, token)
    return 0


def run_bot(settings: Settings, token: str) -> None:
    """Run the bot until it stops; Discord's refusals become one readable line."""
    import discord

    from bot.client import HpsBot
    from cli.main import CommandError

    try:
        HpsBot(settings).run(token, log_handler=None)
    except discord.LoginFailure:
        raise CommandError(
            "Discord refused the bot token (DISCORD_TOKEN): copy it again from the developer "
            "portal's Bot page"
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise CommandError(
            "Discord refused the Message Content intent: enable it on the developer portal's "
            "Bot page (the bot reads other bots' generation messages)"
        ) from None
    except discord.ConnectionClosed as exc:
        if exc.code == 4010:
            raise CommandError(
                "Discord refused the shard: every SHARD_IDS entry must be below SHARD_COUNT"
            ) from None
        if exc.code == 4011:
            raise CommandError(
                "Discord requires more shards for this many guilds: raise SHARD_COUNT (or "
                "leave it unset for Discord's recommendation)"
            ) from None
        raise


def _token(settings: Settings) -> str:
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    return token.strip()


def run_bot_and_worker(settings: Settings) -> int:
    """The bot against Discord (or DISCORD_API_BASE) plus one worker process beside it."""
    import os
    import sys

    from config.logging_setup import configure_logging
    from worker.process import WorkerProcess

    log_path = settings.hps_data_dir / "worker.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    print(f"hps: starting a worker (log: {log_path})")
    worker = WorkerProcess(env, log_path, name="hps-run", pool="prefork", cwd=Path.cwd())
    try:
        print("hps: connecting the bot (Ctrl-C to stop)")
        configure_logging(settings)  # LOG_FORMAT text|json, secrets redacted
        run_bot(settings, _token(settings))
    finally:
        worker.stop()
    return 0
