"""Generic adapter: a generator bot posts several image attachments for one prompt and the
requester picks one by reacting with a number emoji (1️⃣ = the first image)."""

from __future__ import annotations

from bot.adapters.base import AttachmentRef, ParsedGeneration, is_image, prompt_from, requester_from

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
    requester: see :func:`bot.adapters.base.requester_from`."""
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
