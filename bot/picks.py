"""Persistent pick buttons under the bot's own generations. The state lives in the custom_id
(``hps:pick:<position>``) and the message id, so a click works after any restart."""

from __future__ import annotations

import logging
import re
from functools import partial
from typing import Any

import discord

from bot import metrics
from bot.services import services_of
from db.engine import run_transaction_async
from db.errors import DomainError
from db.ingest import ChoiceIn, record_choice
from db.models import ChoiceMethod

log = logging.getLogger(__name__)
CUSTOM_ID = re.compile(r"hps:pick:(?P<position>[0-9])")


class PickButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID.pattern):
    def __init__(self, position: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"#{position + 1}",
                style=discord.ButtonStyle.secondary,
                custom_id=f"hps:pick:{position}",
            )
        )
        self.position = position

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> PickButton:
        return cls(int(match["position"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction.client)
        assert interaction.message is not None
        choice = ChoiceIn(
            user_id=interaction.user.id,
            position=self.position,
            method=ChoiceMethod.button,
            generation_message_id=interaction.message.id,
        )
        # Acknowledge first: Discord's 3 seconds must hold even when the database is slow.
        await interaction.response.defer(ephemeral=True, thinking=True)
        metrics.observe_ack_since(interaction.created_at)
        try:
            await run_transaction_async(
                services.async_factory, partial(record_choice, choice=choice)
            )
        except DomainError as exc:
            metrics.count_error(exc)
            await interaction.edit_original_response(content=f"Not recorded: {exc}")
            return
        except Exception:  # never leave the user looking at "thinking..."
            metrics.count_error("pick")
            log.exception("pick on message %s not recorded", interaction.message.id)
            await interaction.edit_original_response(
                content="Sorry, your pick was not recorded (a problem on my side); try again."
            )
            return
        metrics.count_choice(ChoiceMethod.button)
        await interaction.edit_original_response(
            content=f"Recorded your pick: image #{self.position + 1}. Click another to change it."
        )


def pick_view(count: int) -> discord.ui.View:
    """A persistent view with one pick button per image."""
    view = discord.ui.View(timeout=None)
    for position in range(count):
        view.add_item(PickButton(position))
    return view
