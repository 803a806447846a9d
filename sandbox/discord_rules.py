"""Discord's rules for message bodies, as the emulator enforces them: the length and count
limits (HTTP 400, code 50035 "Invalid Form Body"), the upload size limit (HTTP 413, code 40005)
and who a post pings under ``allowed_mentions``; and gateway sharding: which shard a guild's
events go to, and the IDENTIFY ``shard`` Discord refuses (close codes 4010 and 4011).

From Discord's API reference ("Create Message", "Allowed Mentions Object", "Message Formatting",
Gateway "Sharding", "Gateway Close Event Codes").
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
MAX_GUILDS_PER_SHARD = 2500  # Discord: "Each shard can only support a maximum of 2500 guilds"
GUILDS_PER_RECOMMENDED_SHARD = 1000  # what GET /gateway/bot's ``shards`` roughly follows
INVALID_SHARD = (4010, "Invalid shard.")
SHARDING_REQUIRED = (4011, "Sharding required.")


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


# -- gateway sharding -------------------------------------------------------------------------


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives ``guild_id``'s events: ``(guild_id >> 22) % shard_count``
    (Discord's sharding formula)."""
    return (guild_id >> 22) % shard_count


def parse_shard(value: Any) -> tuple[int, int] | None:
    """The ``(shard_id, shard_count)`` of an IDENTIFY's ``shard`` field; None when absent
    (one connection gets every guild). Raises ValueError where Discord closes the connection
    with 4010 "Invalid shard": not two integers, a count below 1, an id outside
    ``0 <= id < count``."""
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"shard must be [shard_id, num_shards], not {value!r}")
    shard_id, count = int(value[0]), int(value[1])
    if count < 1 or not 0 <= shard_id < count:
        raise ValueError(f"shard {shard_id} outside 0..{count - 1}")
    return shard_id, count


def shard_refusal(
    value: Any, guild_ids: list[int], *, max_guilds: int = MAX_GUILDS_PER_SHARD
) -> tuple[int, str] | None:
    """The close code and reason Discord answers an IDENTIFY's ``shard`` with, if it refuses
    it: 4010 for an invalid shard, 4011 when the session would handle more than
    ``max_guilds`` of the bot's ``guild_ids`` (it must shard, or use more shards)."""
    try:
        shard = parse_shard(value)
    except ValueError:
        return INVALID_SHARD
    served = (
        guild_ids if shard is None else [g for g in guild_ids if shard_of(g, shard[1]) == shard[0]]
    )
    if len(served) > max_guilds:
        return SHARDING_REQUIRED
    return None


def recommended_shards(guild_count: int) -> int:
    """GET /gateway/bot's ``shards``: about one shard per 1,000 guilds, at least one."""
    return max(1, -(-guild_count // GUILDS_PER_RECOMMENDED_SHARD))
