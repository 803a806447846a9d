"""The pieces of bot.checks that need no Discord connection (the refusals themselves are
tested end to end: tests/bot/harvesting/test_harvest.py, tests/bot/test_guild_isolation.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.checks import ADMINS_ONLY, Refused, answer_refusal, is_operator
from bot.services import BotServices, services_of
from config import load_settings

OPERATOR = 444444444444444444


def services(tmp_path: Path) -> BotServices:
    return BotServices(
        load_settings(
            database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
            storage_url=(tmp_path / "images").as_uri(),
            hps_data_dir=tmp_path,
            operator_user_ids=str(OPERATOR),
        )
    )


class Owned(commands.Bot):
    """A bot whose application owner is nobody and whose application info may fail."""

    def __init__(self, fail: bool) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.none())
        self.fail = fail

    async def is_owner(self, user: Any) -> bool:
        if self.fail:
            raise discord.HTTPException(SimpleNamespace(status=503, reason="down"), "down")
        return False


async def test_operators_are_the_configured_users(tmp_path: Path) -> None:
    the_services = services(tmp_path)
    operator, someone = SimpleNamespace(id=OPERATOR), SimpleNamespace(id=1)
    client = Owned(fail=False)
    assert await is_operator(the_services, client, operator)  # type: ignore[arg-type]
    assert not await is_operator(the_services, client, someone)  # type: ignore[arg-type]
    # The application info unavailable: no operator rights beyond the configured users.
    assert not await is_operator(the_services, Owned(fail=True), someone)  # type: ignore[arg-type]


async def test_only_refusals_get_the_private_line() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    async def send(text: str, **kwargs: Any) -> None:
        sent.append((text, kwargs))

    interaction: Any = SimpleNamespace(followup=SimpleNamespace(send=send))
    assert not await answer_refusal(interaction, app_commands.AppCommandError("boom"))
    assert sent == []
    assert await answer_refusal(interaction, Refused(ADMINS_ONLY))
    [(text, kwargs)] = sent
    assert text == ADMINS_ONLY and kwargs["ephemeral"] is True
    assert kwargs["allowed_mentions"].to_dict()["parse"] == []


def test_services_come_from_the_bot_only(tmp_path: Path) -> None:
    the_services = services(tmp_path)
    assert services_of(SimpleNamespace(services=the_services)) is the_services  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no BotServices"):
        services_of(Owned(fail=False))
