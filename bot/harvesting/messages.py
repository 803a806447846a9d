"""A Discord message as adapters read it: plain fields, who asked for it according to Discord."""

from __future__ import annotations

import discord

from bot.harvesting.adapters.base import AttachmentRef, GeneratorMessage


def interaction_user(message: discord.Message) -> int | None:
    """The user whose slash command this message answers (Discord says so, not the text)."""
    metadata = message.interaction_metadata
    return metadata.user.id if metadata is not None else None


def replied_user(message: discord.Message) -> int | None:
    """The (human) author of the message this one replies to, if Discord resolved it."""
    reference = message.reference
    resolved = reference.resolved if reference is not None else None
    if isinstance(resolved, discord.Message) and not resolved.author.bot:
        return resolved.author.id
    return None


def generator_message(message: discord.Message) -> GeneratorMessage:
    """The fields of ``message`` that adapters read."""
    return GeneratorMessage(
        message_id=message.id,
        content=message.content,
        attachments=[
            AttachmentRef(a.url, a.filename, a.size, a.content_type, a.description)
            for a in message.attachments
        ],
        author_is_bot=message.author.bot,
        interaction_user_id=interaction_user(message),
        replied_user_id=replied_user(message),
        referenced_message_id=message.reference.message_id if message.reference else None,
    )
