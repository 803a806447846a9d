"""Discord's rules for message bodies, as the emulator enforces them: the length and count
limits (HTTP 400, code 50035 "Invalid Form Body"), the upload size limit (HTTP 413, code 40005)
and who a post pings under ``allowed_mentions``.

From Discord's API reference ("Create Message", "Allowed Mentions Object", "Message Formatting").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_CONTENT_CHARS = 2000
MAX_FILES = 10
MAX_EMBEDS = 10
MAX_COMPONENT_ROWS = 5
USER_MENTION = re.compile(r"<@!?(\d{1,20})>")
ROLE_MENTION = re.compile(r"<@&(\d{1,20})>")
EVERYONE_MENTION = re.compile(r"@(everyone|here)")
PARSE_TYPES = ("roles", "users", "everyone")


class FormError(Exception):
    """A request body Discord refuses; ``response`` is the JSON it answers with."""

    def __init__(self, status: int, response: dict[str, Any]) -> None:
        super().__init__(response.get("message", ""))
        self.status = status
        self.response = response


def _invalid_form(field_name: str, code: str, message: str) -> FormError:
    return FormError(
        400,
        {
            "message": "Invalid Form Body",
            "code": 50035,
            "errors": {field_name: {"_errors": [{"code": code, "message": message}]}},
        },
    )


def check_message_body(
    body: dict[str, Any],
    files: list[tuple[str, bytes, str]],
    *,
    upload_limit: int,
    editing: bool = False,
) -> None:
    """Raise :class:`FormError` where Discord would refuse this message body."""
    content = body.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT_CHARS:
        raise _invalid_form(
            "content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_CHARS} or fewer in length."
        )
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        raise _invalid_form(
            "embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length."
        )
    attachments = body.get("attachments") or []
    if len(files) > MAX_FILES or len(attachments) > MAX_FILES:
        raise _invalid_form(
            "attachments", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer in length."
        )
    if len(body.get("components") or []) > MAX_COMPONENT_ROWS:
        raise _invalid_form(
            "components",
            "BASE_TYPE_MAX_LENGTH",
            f"Must be {MAX_COMPONENT_ROWS} or fewer in length.",
        )
    if sum(len(data) for _, data, _ in files) > upload_limit:
        raise FormError(413, {"message": "Request entity too large", "code": 40005})
    # Discord: at least one of content, embeds, sticker_ids, components, files or poll.
    if (
        not editing
        and not content
        and not embeds
        and not files
        and not body.get("components")
        and not body.get("sticker_ids")
        and not body.get("poll")
    ):
        raise FormError(400, {"message": "Cannot send an empty message", "code": 50006})
    check_allowed_mentions(body.get("allowed_mentions"))


def check_allowed_mentions(allowed: dict[str, Any] | None) -> None:
    """The allowed_mentions object's own rules: known parse types, and a type given both in
    ``parse`` and as an id list is an error."""
    if allowed is None:
        return
    parse = allowed.get("parse") or []
    for name in parse:
        if name not in PARSE_TYPES:
            raise _invalid_form("allowed_mentions", "ENUM_TYPE_COERCE", f"{name!r} is not valid.")
    for name in ("users", "roles"):
        ids = allowed.get(name) or []
        if name in parse and ids:
            raise _invalid_form(
                "allowed_mentions",
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                f'parse:["{name}"] and {name}: [ids...] are mutually exclusive.',
            )
        if len(ids) > 100:
            raise _invalid_form(
                "allowed_mentions", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."
            )


@dataclass
class Pings:
    """Who one post notifies."""

    everyone: bool = False  # @everyone or @here
    users: list[int] = field(default_factory=list)
    roles: list[int] = field(default_factory=list)

    @property
    def anyone(self) -> bool:
        return self.everyone or bool(self.users or self.roles)


def pings_of(
    content: str,
    allowed: dict[str, Any] | None,
    *,
    replied_user: int | None = None,
    can_mention_everyone: bool = True,
) -> Pings:
    """Who ``content`` pings under ``allowed`` (absent: everything mentioned is parsed).

    With ``can_mention_everyone`` (the poster's MENTION_EVERYONE permission; the emulator's bot
    has every permission) @everyone, @here and every role mention notify."""
    users = [int(u) for u in USER_MENTION.findall(content)]
    roles = [int(r) for r in ROLE_MENTION.findall(content)]
    everyone = bool(EVERYONE_MENTION.search(content)) and can_mention_everyone
    if allowed is None:
        pinged_users = list(dict.fromkeys(users))
        if replied_user is not None and replied_user not in pinged_users:
            pinged_users.append(replied_user)
        pinged_roles = list(dict.fromkeys(roles)) if can_mention_everyone else []
        return Pings(everyone, pinged_users, pinged_roles)
    parse = set(allowed.get("parse") or [])
    allowed_users = {int(u) for u in allowed.get("users") or []}
    allowed_roles = {int(r) for r in allowed.get("roles") or []}
    pinged_users = [u for u in dict.fromkeys(users) if "users" in parse or u in allowed_users]
    reply_pings = bool(allowed.get("replied_user"))
    if replied_user is not None and reply_pings and replied_user not in pinged_users:
        pinged_users.append(replied_user)
    pinged_roles = [r for r in dict.fromkeys(roles) if "roles" in parse or r in allowed_roles]
    return Pings(everyone and "everyone" in parse, pinged_users, pinged_roles)
