"""``hps run``, ``hps bot``, ``hps demo``: running the product (the bot and a worker, the bot
alone, or the offline demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.errors import CommandError
from cli.resources import open_resources
from config import Settings, get_settings

SHOWN_AT_START = ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "DISCORD_TOKEN")

# Gateway close codes that mean the shard settings are wrong.
SHARD_REFUSALS = {
    4010: "Discord refused the shard: every SHARD_IDS entry must be below SHARD_COUNT",
    4011: "Discord requires more shards for this many guilds: raise SHARD_COUNT (or "
    "leave it unset for Discord's recommendation)",
}


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps run``, ``hps bot`` and ``hps demo`` to the ``hps`` parser."""
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


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (``hps run`` falls back to the demo, so it takes them too)."""
    parser.add_argument(
        "--generations",
        type=int,
        default=120,
        help="generations each guild's community posts (120)",
    )
    parser.add_argument(
        "--demo-dir", type=Path, default=None, help="the demo's own data (default DATA_DIR/demo)"
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Prepare and check the data store, then run the bot and a worker (or the demo)."""
    settings = get_settings()
    mode = "embedded defaults" if settings.uses_embedded_defaults else "external services"
    print(f"hps: starting on {mode}")
    for key, value in settings.redacted().items():
        if key in SHOWN_AT_START:
            print(f"  {key} = {value or '(unset)'}")
    prepare_data_store(settings)
    if args.check:
        print("hps: ready")
        return 0
    if not _token(settings):
        print("hps: ready; no DISCORD_TOKEN, so here is the offline demo (Ctrl-C to stop)")
        return cmd_demo(args)
    return run_bot_and_worker(settings)


def prepare_data_store(settings: Settings) -> None:
    """Migrate the database to head, prove the image store writable, print the row counts."""
    from db.stats import row_counts
    from migrations.runner import current_revision, upgrade

    upgrade(settings.database_url)
    print(f"  database schema at revision {current_revision(settings.database_url)}")
    with open_resources(settings) as resources:
        store = resources.store
        probe = store.put(b"hps storage probe")
        store.delete(probe)
        print(f"  image store writable ({type(store).__name__})")
        with resources.factory() as session:
            counts = row_counts(session)
    print("  data: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


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
        refusal = SHARD_REFUSALS.get(exc.code)
        if refusal is not None:
            raise CommandError(refusal) from None
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
