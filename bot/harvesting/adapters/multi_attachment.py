"""Generic adapter: a generator bot posts several image attachments for one prompt and the
requester picks one by reacting with a number emoji (1️⃣ = the first image).

Where the generator says which model made each image (alt text ``model: sdxl``, filenames
``model-sdxl_0.png``, or a ``Models: sdxl, sd-1.5`` line after the bold prompt: see
:mod:`bot.harvesting.model_labels`), the labels are stored as ``params["image_models"]`` (one
per image, None where unknown), and picks between different models feed the arena's ratings."""

from __future__ import annotations

from typing import Any

from bot.harvesting.adapters.base import (
    Adapter,
    AttachmentRef,
    GeneratorMessage,
    ParsedChoice,
    ParsedGeneration,
    is_image,
    requester_from,
    split_generator_text,
)
from bot.harvesting.model_labels import image_models

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
    requester: see :func:`bot.harvesting.adapters.base.requester_from`; the images' model
    labels, where the generator gives them, in ``params["image_models"]``."""
    images = [a for a in attachments if is_image(a)]
    if not author_is_bot or len(images) < 2:
        return None
    prompt, suffix = split_generator_text(content)
    if not prompt:
        return None
    requester = requester_from(
        content, interaction_user_id=interaction_user_id, replied_user_id=replied_user_id
    )
    labels = image_models(
        [image.filename for image in images], [image.description for image in images], suffix
    )
    params: dict[str, Any] = {"image_models": labels} if labels is not None else {}
    return ParsedGeneration(prompt, requester, images, params=params)


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
