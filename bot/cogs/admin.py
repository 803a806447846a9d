"""Admin checks and helpers for the ``/hps admin`` commands.

Discord's command permissions are only a hint to clients; every admin command checks on the
server side that the member is an Administrator, can Manage Server, or has one of the guild's
configured admin roles."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import discord

from db.channels import admin_role_ids
from db.engine import run_transaction_async

ADAPTERS = Literal["multi_attachment", "midjourney"]


async def is_admin(bot: Any, interaction: discord.Interaction) -> bool:
    """The server-side admin check."""
    member = interaction.user
    if not isinstance(member, discord.Member) or interaction.guild_id is None:
        return False
    permissions = interaction.permissions  # resolved by Discord for this member and channel
    if permissions.administrator or permissions.manage_guild:
        return True
    allowed = await run_transaction_async(
        bot.factory, partial(admin_role_ids, guild_id=interaction.guild_id)
    )
    return any(role.id in allowed for role in member.roles)
