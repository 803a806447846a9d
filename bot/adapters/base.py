"""What adapters produce."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MENTION = re.compile(r"<@!?(\d+)>")
BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


@dataclass(frozen=True)
class AttachmentRef:
    url: str
    filename: str
    size: int
    content_type: str | None


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


def first_mention(content: str) -> int | None:
    """The first user mentioned in ``content``."""
    match = MENTION.search(content)
    return int(match.group(1)) if match else None


def prompt_from(content: str) -> str:
    """The bold part of a generator's message, else the text without mentions."""
    match = BOLD.search(content)
    text = match.group(1) if match else MENTION.sub("", content)
    return " ".join(text.split())


def is_image(attachment: AttachmentRef) -> bool:
    """Whether the attachment claims to be an image (checked for real at intake)."""
    if attachment.content_type:
        return attachment.content_type.split(";")[0].strip() in IMAGE_TYPES
    return attachment.filename.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif"))
