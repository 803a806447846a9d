"""What an adapter is, what it reads and what it produces, and the parsing helpers adapters
share."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from db.models import ChoiceMethod

MENTION = re.compile(r"<@!?(\d+)>")
BOLD_PROMPT = re.compile(r"\*\*(.+)\*\*", re.DOTALL)  # greedy: first ** to last **
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


@dataclass(frozen=True)
class AttachmentRef:
    url: str
    filename: str
    size: int
    content_type: str | None
    description: str | None = None  # the alt text, where the generator set one


@dataclass(frozen=True)
class ParsedGeneration:
    prompt: str
    requester_id: int | None
    attachments: list[AttachmentRef]
    split_grid: bool = False
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedChoice:
    generation_message_id: int
    user_id: int
    position: int | None
    choice_message_id: int | None = None  # the message that expresses it (an upscale)
    method: ChoiceMethod = ChoiceMethod.reaction


@dataclass(frozen=True)
class GeneratorMessage:
    """The plain fields of a Discord message that adapters read."""

    message_id: int
    content: str
    attachments: list[AttachmentRef]
    author_is_bot: bool
    interaction_user_id: int | None = None  # whose slash command it answers
    replied_user_id: int | None = None  # the human author of the message it replies to
    referenced_message_id: int | None = None  # the message it replies to


class Adapter(ABC):
    """One generator bot's conventions: which messages are generations, which are picks.

    An adapter is a module of :mod:`bot.harvesting.adapters` whose ``ADAPTER`` is an instance
    of a subclass; admins choose it for a channel by :attr:`name`."""

    name: ClassVar[str]
    picks_by_reaction: ClassVar[bool] = False  # whether reactions on a generation are picks

    @abstractmethod
    def read(self, message: GeneratorMessage) -> ParsedGeneration | ParsedChoice | None:
        """The generation or the pick ``message`` stands for, None when it is neither."""

    def reaction_position(self, emoji: str) -> int | None:
        """The image a reaction with ``emoji`` picks (None: not a pick)."""
        return None


def first_mention(content: str) -> int | None:
    """The first user mentioned in ``content``."""
    match = MENTION.search(content)
    return int(match.group(1)) if match else None


def split_generator_text(content: str) -> tuple[str, str]:
    """``(prompt, suffix)`` of a generator's ``**<prompt>** <suffix>`` line.

    The prompt is everything between the first and the last ``**`` (a prompt that contains
    ``**`` itself stays whole); the suffix, after the last ``**``, is the generator's own text
    (``- <@user> (fast)``, ``- Image #2 <@user>``): the only place a requester is read from,
    since the prompt is whatever the user typed, mentions of other people included. Without a
    bold prompt: the text without mentions, and no suffix."""
    match = BOLD_PROMPT.search(content)
    if match is None:
        return " ".join(MENTION.sub("", content).split()), ""
    return " ".join(match.group(1).split()), content[match.end() :]


def requester_from(
    content: str, *, interaction_user_id: int | None = None, replied_user_id: int | None = None
) -> int | None:
    """Who asked for a generator's message, from where the generator puts it, never from the
    prompt: the user whose slash command it answers (Discord's interaction metadata), else the
    author of the message it replies to, else the mention in the generator's suffix."""
    if interaction_user_id is not None:
        return interaction_user_id
    if replied_user_id is not None:
        return replied_user_id
    return first_mention(split_generator_text(content)[1])


def prompt_from(content: str) -> str:
    """The bold part of a generator's message, else the text without mentions."""
    return split_generator_text(content)[0]


def is_image(attachment: AttachmentRef) -> bool:
    """Whether the attachment claims to be an image (checked for real at intake)."""
    if attachment.content_type:
        return attachment.content_type.split(";")[0].strip() in IMAGE_TYPES
    return attachment.filename.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif"))
