"""Generic adapter: a generator bot posts several image attachments for one prompt and the
requester picks one by reacting with a number emoji (1️⃣ = the first image)."""

from __future__ import annotations

from bot.harvesting.adapters.base import (
    Adapter,
    AttachmentRef,
    GeneratorMessage,
    ParsedChoice,
    ParsedGeneration,
    is_image,
    prompt_from,
    requester_from,
)

NAME = "multi_attachment"
NUMBER_EMOJIS = {f"{digit}\ufe0f\u20e3": digit - 1 for digit in range(1, 10)} | {"\U0001f51f": 9}


def parse_message(
    content: str,
    attachments: list[AttachmentRef],
    *,
    author_is_bot: bool,
    interaction_user_id: int | None = None,
    replied_user_id: int | None = None,
) -> ParsedGeneration | None:
    """A generation if this is a generator bot's message with at least two images. The
    requester: see :func:`bot.harvesting.adapters.base.requester_from`."""
    images = [a for a in attachments if is_image(a)]
    if not author_is_bot or len(images) < 2:
        return None
    prompt = prompt_from(content)
    if not prompt:
        return None
    requester = requester_from(
        content, interaction_user_id=interaction_user_id, replied_user_id=replied_user_id
    )
    return ParsedGeneration(prompt, requester, images)


def position_of(emoji: str) -> int | None:
    """The image index a number emoji stands for, or None for any other emoji."""
    return NUMBER_EMOJIS.get(emoji)


class MultiAttachment(Adapter):
    """Messages with several images are generations; number reactions are picks."""

    name = NAME
    picks_by_reaction = True

    def read(self, message: GeneratorMessage) -> ParsedGeneration | ParsedChoice | None:
        return parse_message(
            message.content,
            message.attachments,
            author_is_bot=message.author_is_bot,
            interaction_user_id=message.interaction_user_id,
            replied_user_id=message.replied_user_id,
        )

    def reaction_position(self, emoji: str) -> int | None:
        return position_of(emoji)


ADAPTER = MultiAttachment()
