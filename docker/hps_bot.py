"""Entry point of the compose ``bot`` service: the Discord bot alone, no worker beside it.

Interim: ``hps run`` starts a worker next to the bot, which the bot image (no torch) cannot
host, and the CLI has no ``hps bot`` subcommand yet. Once it has one, docker-compose.yml's bot
command becomes ``["hps", "bot"]`` and this file and its COPY line in docker/Dockerfile go.
"""

from __future__ import annotations

import logging
import sys

from config import SettingsError, load_settings


def main() -> int:
    """Run the bot until it is stopped; 2 with one line on stderr when misconfigured."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"hps-bot: error: {exc}", file=sys.stderr)
        return 2
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    if not token.strip():
        print("hps-bot: error: DISCORD_TOKEN is not set (put it in .env)", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from bot.client import HpsBot

    HpsBot(settings).run(token, log_handler=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
