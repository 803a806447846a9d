"""Admin and operator checks for the ``/hps admin`` and ``/hps operator`` commands.

Discord's command permissions are only a hint to clients; every admin command checks on the
server side that the member is an Administrator, can Manage Server, or has one of the guild's
configured admin roles, and acts on that guild only. Operator commands (global models,
training on the pooled guilds, exports across guilds) check that the user is one of the
bot's operators (``OPERATOR_USER_IDS``) or the application's owner; a guild admin is not."""

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


async def is_operator(bot: Any, user: discord.abc.User) -> bool:
    """The server-side operator check: ``OPERATOR_USER_IDS`` or the application's owner (or a
    member of its owning team), as Discord's application info reports it."""
    if user.id in bot.settings.operator_user_ids:
        return True
    try:
        return bool(await bot.is_owner(user))
    except discord.HTTPException:  # the application info is unavailable: no operator rights
        return False
