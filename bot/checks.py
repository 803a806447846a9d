"""Server-side checks on app commands, one decorator per command, in the spirit of
Red-DiscordBot's ``@checks.admin_or_permissions``::

    @admin.command(name="stats", description="...")
    @checks.admin()
    async def stats(self, interaction: discord.Interaction) -> None: ...

Discord's command permissions are only a hint to clients; every admin command checks on the
server side that the member is an Administrator, can Manage Server, or has one of the guild's
configured admin roles, and acts on that guild only. Operator commands (global models,
training on the pooled guilds, exports across guilds) check that the user is one of the
bot's operators (``OPERATOR_USER_IDS``) or the application's owner; a guild admin is not.

A check acknowledges the interaction first (privately, within Discord's 3 seconds, even when
the database is slow), so a command that passes it has been deferred already. A refusal
raises :class:`Refused`; the bot's app command error handler answers it with
:func:`answer_refusal`: one private line."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.replies import acknowledge, say_privately
from bot.services import BotServices, services_of
from db.channels import admin_role_ids
from db.engine import run_transaction_async

T = TypeVar("T")
ADMINS_ONLY = "Only server admins can use this command."
OPERATORS_ONLY = "Only the bot's operators can use this command."


class Refused(app_commands.CheckFailure):
    """A check refused the command; the message is the private answer the user gets."""


async def is_admin(services: BotServices, interaction: discord.Interaction) -> bool:
    """Whether the interaction's member administers its guild: Administrator, Manage Server
    (as Discord resolved them for this member and channel) or one of the guild's admin roles."""
    member = interaction.user
    if not isinstance(member, discord.Member) or interaction.guild_id is None:
        return False
    permissions = interaction.permissions
    if permissions.administrator or permissions.manage_guild:
        return True
    allowed = await run_transaction_async(
        services.async_factory, partial(admin_role_ids, guild_id=interaction.guild_id)
    )
    return any(role.id in allowed for role in member.roles)


async def is_operator(
    services: BotServices, client: discord.Client, user: discord.abc.User
) -> bool:
    """Whether ``user`` operates the bot: ``OPERATOR_USER_IDS``, or the application's owner
    (or a member of its owning team) as Discord's application info reports it."""
    if user.id in services.settings.operator_user_ids:
        return True
    if not isinstance(client, commands.Bot | commands.AutoShardedBot):
        return False
    try:
        return bool(await client.is_owner(user))
    except discord.HTTPException:  # the application info is unavailable: no operator rights
        return False


async def _admin_predicate(interaction: discord.Interaction) -> bool:
    await acknowledge(interaction)
    if await is_admin(services_of(interaction.client), interaction):
        return True
    raise Refused(ADMINS_ONLY)


async def _operator_predicate(interaction: discord.Interaction) -> bool:
    await acknowledge(interaction)
    client = interaction.client
    if await is_operator(services_of(client), client, interaction.user):
        return True
    raise Refused(OPERATORS_ONLY)


def admin() -> Callable[[T], T]:
    """Only the guild's admins may run the decorated app command (see :func:`is_admin`);
    the interaction is acknowledged privately before the check."""
    return app_commands.check(_admin_predicate)


def operator() -> Callable[[T], T]:
    """Only the bot's operators may run the decorated app command (see
    :func:`is_operator`); the interaction is acknowledged privately before the check."""
    return app_commands.check(_operator_predicate)


async def answer_refusal(
    interaction: discord.Interaction, error: app_commands.AppCommandError
) -> bool:
    """Answer a :class:`Refused` check with its private line; False for any other error."""
    if not isinstance(error, Refused):
        return False
    await say_privately(interaction, str(error))
    return True
