"""The first answers to an interaction: a private deferral within Discord's 3 seconds, then
private follow-ups (a refusal, a confirmation, a queued note)."""

from __future__ import annotations

import discord

from bot import metrics


async def acknowledge(interaction: discord.Interaction) -> None:
    """Defer privately (only the user sees "thinking...") within Discord's 3 seconds, and
    time it. Private, because the first follow-up takes the deferral's visibility and may be
    a refusal; public results are later follow-ups."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    metrics.observe_ack_since(interaction.created_at)


async def say_privately(interaction: discord.Interaction, text: str) -> None:
    """A private follow-up (pings nobody): a refusal, a confirmation, a queued note."""
    await interaction.followup.send(
        text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
    )
