"""Midjourney-style generator: a 2x2 grid image per prompt (split into its four images), then,
when the requester picks, an upscale message ``**<prompt>** - Image #N <@user>`` that replies to
the grid. The upscale is the choice (image N of the grid, by that user).

The model version a grid was made with is a parameter of its prompt (``--v 6.1``,
``--niji 6``): stored as ``params["model"]`` (``midjourney v6.1``), absent when the prompt
names none (unknown). All four images of a grid are one version, so a pick within a grid is no
evidence between versions (see :mod:`db.harvest_ratings`)."""

from __future__ import annotations

import re

from bot.harvesting.adapters.base import (
    Adapter,
    AttachmentRef,
    GeneratorMessage,
    ParsedChoice,
    ParsedGeneration,
    first_mention,
    is_image,
    requester_from,
    split_generator_text,
)
from bot.harvesting.model_labels import midjourney_model
from db.models import ChoiceMethod

NAME = "midjourney"
UPSCALE = re.compile(r"\bImage #([1-4])\b")


def parse_grid(
    content: str,
    attachments: list[AttachmentRef],
    *,
    author_is_bot: bool,
    interaction_user_id: int | None = None,
) -> ParsedGeneration | None:
    """A generation for a grid message (one image, a bold prompt), else None. The requester
    is the user whose command it answers, else the mention after the prompt; the model
    version, where the prompt names one, is ``params["model"]``."""
    images = [a for a in attachments if is_image(a)]
    prompt, suffix = split_generator_text(content)
    if not author_is_bot or len(images) != 1 or UPSCALE.search(suffix):
        return None
    if not prompt:
        return None
    requester = requester_from(content, interaction_user_id=interaction_user_id)
    params = {"layout": "2x2 grid"}
    model = midjourney_model(prompt)
    if model is not None:
        params["model"] = model
    return ParsedGeneration(prompt, requester, images, split_grid=True, params=params)


def parse_upscale(
    content: str, *, author_is_bot: bool, message_id: int, referenced_message_id: int | None
) -> ParsedChoice | None:
    """The pick an upscale message stands for (read from the generator's text after the
    prompt, never from the prompt), else None."""
    suffix = split_generator_text(content)[1]
    match = UPSCALE.search(suffix)
    user = first_mention(suffix)
    if not author_is_bot or match is None or user is None or referenced_message_id is None:
        return None
    return ParsedChoice(
        referenced_message_id,
        user,
        int(match.group(1)) - 1,
        choice_message_id=message_id,
        method=ChoiceMethod.upscale,
    )


class Midjourney(Adapter):
    """Grids are generations, upscales are picks."""

    name = NAME

    def read(self, message: GeneratorMessage) -> ParsedGeneration | ParsedChoice | None:
        choice = parse_upscale(
            message.content,
            author_is_bot=message.author_is_bot,
            message_id=message.message_id,
            referenced_message_id=message.referenced_message_id,
        )
        if choice is not None:
            return choice
        return parse_grid(
            message.content,
            message.attachments,
            author_is_bot=message.author_is_bot,
            interaction_user_id=message.interaction_user_id,
        )


ADAPTER = Midjourney()
