"""A local Discord emulator that an unmodified discord.py client talks to: gateway websocket,
the REST routes the bot uses, and a CDN for attachments, all on 127.0.0.1.

Point discord.py at it with :func:`point_discord_py_at` (or the bot's settings). The test or
demo drives it through the scripting methods (``inject_message``, ``drop_connections``,
``fail_next_with_429``) and inspects ``calls``, the record of every REST request.

Status: gateway (identify, ready, guild create, heartbeats, RESUME with replay of what was
missed, INVALID_SESSION), sharding (IDENTIFY with ``shard: [id, count]``: READY and
GUILD_CREATE carry only that shard's guilds, every guild event goes only to the sessions of the
guild's shard ``(guild_id >> 22) % count``, events without a guild to shard 0; an invalid shard
is closed with 4010, a session that would hold too many guilds with 4011; GET /gateway/bot
recommends a shard count), several guilds, messages (create, fetch, edit, delete, history),
reactions (added and removed), slash commands with attachment options, button clicks,
interaction callbacks and webhook follow-ups, CDN, 429s, the call log.

Discord's rules it enforces (``sandbox.discord_rules``): content at most 2,000 characters, at
most 10 files and 10 embeds (HTTP 400, code 50035), the upload size limit (413); an interaction
must be answered within 3 seconds and its token works for 15 minutes; after a deferral the first
follow-up takes the deferral's visibility (it becomes the deferred response); every post is
recorded in ``posts`` with whom it pinged under its ``allowed_mentions``.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, WSMsgType, web

from sandbox.discord_rules import (
    MAX_GUILDS_PER_SHARD,
    FormError,
    Pings,
    check_message_body,
    parse_shard,
    pings_of,
    recommended_shards,
    shard_of,
    shard_refusal,
)

# An attachment: (filename, bytes, MIME type), optionally with its description (alt text).
AttachmentSpec = tuple[str, bytes, str] | tuple[str, bytes, str, str]
DISCORD_EPOCH_MS = 1420070400000
API_PREFIX = "/api/v10"
HEARTBEAT_INTERVAL_MS = 41250
REPLAY_BUFFER = 1000
ADMIN_PERMISSIONS = "2199023255551"  # every permission bit, ADMINISTRATOR included
MEMBER_PERMISSIONS = "1071698660929"  # a regular member: no ADMINISTRATOR, no MANAGE_GUILD
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
EPHEMERAL = 1 << 6
INTERACTION_ACK_DEADLINE_S = 3.0
INTERACTION_TOKEN_LIFETIME_S = 15 * 60.0
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # members, presences, message content


def _option_values(options: list[dict[str, Any]], option_type: int) -> list[Any]:
    found = []
    for option in options:
        if option.get("type") == option_type:
            found.append(option["value"])
        found += _option_values(option.get("options", []), option_type)
    return found


class OptionRefused(ValueError):
    """A slash command whose options break the constraints its bot registered: Discord's
    client and API refuse it, so the bot never receives it."""


def check_options(given: list[dict[str, Any]], registered: list[dict[str, Any]]) -> None:
    """Raise OptionRefused where ``given`` options break the registered constraints (string
    lengths, number ranges, choices, unknown or missing required options)."""
    by_name = {option["name"]: option for option in registered}
    for option in given:
        spec = by_name.get(option["name"])
        if spec is None:
            raise OptionRefused(f"unknown option {option['name']!r}")
        if option.get("type") in (1, 2):  # a subcommand (group): check what it holds
            check_options(option.get("options", []), spec.get("options", []))
            continue
        value = option.get("value")
        lengths = (spec.get("min_length", 0), spec.get("max_length", 6000))
        if spec.get("type") == 3 and not lengths[0] <= len(str(value)) <= lengths[1]:
            raise OptionRefused(f"option {option['name']!r} has {len(str(value))} characters")
        if spec.get("type") in (4, 10) and isinstance(value, int | float):
            low, high = spec.get("min_value"), spec.get("max_value")
            if (low is not None and value < low) or (high is not None and value > high):
                raise OptionRefused(f"option {option['name']!r} is out of range: {value}")
        choices = spec.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise OptionRefused(f"option {option['name']!r} is not one of its choices")
    leaf = not any(o.get("type") in (1, 2) for o in registered)
    given_names = {option["name"] for option in given}
    for spec in registered:
        if leaf and spec.get("required") and spec["name"] not in given_names:
            raise OptionRefused(f"required option {spec['name']!r} is missing")


def _replace_attachment_indexes(options: list[dict[str, Any]], ids: list[str]) -> None:
    for option in options:
        if option.get("type") == 11 and isinstance(option.get("value"), int):
            option["value"] = ids[option["value"]]
        _replace_attachment_indexes(option.get("options", []), ids)


@dataclass
class InteractionRecord:
    """What the bot did with one interaction."""

    interaction_id: int
    token: str
    channel_id: int
    user_id: int
    kind: int
    callbacks: list[int] = field(default_factory=list)  # response types, in order
    original: dict[str, Any] | None = None
    edits: list[str] = field(default_factory=list)  # every content the original showed
    followups: list[dict[str, Any]] = field(default_factory=list)
    deferred_flags: int = 0
    acknowledged_at: float | None = None
    created_at: float = field(default_factory=time.monotonic)
    guild_id: int = 0

    @property
    def public_followups(self) -> list[dict[str, Any]]:
        """The follow-ups the whole channel sees (results), in order."""
        return [m for m in self.followups if not m["flags"] & EPHEMERAL]

    @property
    def private_followups(self) -> list[dict[str, Any]]:
        """The follow-ups only the invoking user sees (refusals, notes), in order."""
        return [m for m in self.followups if m["flags"] & EPHEMERAL]

    @property
    def loading(self) -> bool:
        """Deferred ("thinking...") and not yet given its content."""
        return self.callbacks == [5] and self.original is None


@dataclass
class PostRecord:
    """One message the bot created (or a deferred response it filled), with whom it pinged."""

    message: dict[str, Any]
    via: str  # "channel", "callback", "followup", "deferred_response"
    allowed_mentions: dict[str, Any] | None
    pings: Pings
    ephemeral: bool


def snowflake(counter: itertools.count) -> int:
    """A Discord-style id: milliseconds since the Discord epoch, plus a counter."""
    return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(counter) & 0x3FFFFF)


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "flags": 0,
        "public_flags": 0,
    }


@dataclass
class RecordedCall:
    method: str
    path: str
    body: Any
    token: str | None = None  # the bot token it carried (tells several bot processes apart)


@dataclass
class GatewaySession:
    """One identified client. It outlives its socket so that a RESUME can replay what was
    dispatched while the client was away."""

    session_id: str
    socket: web.WebSocketResponse | None
    sequence: int = 0
    sent: list[tuple[int, str]] = field(default_factory=list)  # (seq, raw payload), for replay
    identifies: int = 1
    resumes: int = 0
    shard: tuple[int, int] | None = None  # (shard id, shard count) from the IDENTIFY
    token: str | None = None  # the bot token it identified with
    guilds_seen: set[int] = field(default_factory=set)  # every guild it got an event of

    @property
    def connected(self) -> bool:
        return self.socket is not None and not self.socket.closed

    def serves(self, guild_id: int | None) -> bool:
        """Whether this session receives the events of ``guild_id`` (None: an event without
        a guild, such as a DM, which Discord sends to shard 0 only)."""
        if self.shard is None:
            return True
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return shard_of(guild_id, count) == shard_id

    async def send(self, event: str, data: dict[str, Any], guild_id: int | None = None) -> None:
        if guild_id is not None:
            self.guilds_seen.add(guild_id)
        self.sequence += 1
        raw = json.dumps({"op": 0, "t": event, "s": self.sequence, "d": data})
        self.sent.append((self.sequence, raw))
        del self.sent[:-REPLAY_BUFFER]
        if self.connected:
            assert self.socket is not None
            await self.socket.send_str(raw)


@dataclass
class GuildState:
    """One guild of the emulator: its channels (by name) and who administers it."""

    guild_id: int
    name: str
    channels: dict[str, int]
    admins: set[int] = field(default_factory=set)
    roles: list[int] = field(default_factory=list)


@dataclass
class DiscordEmulator:
    """The emulated Discord: one bot in one or more guilds, their channels and users.

    The first guild is made at construction (``guild_id``, ``channels``); :meth:`add_guild`
    adds more. Channel names are unique across guilds, so ``channels`` maps any name to its id.
    """

    host: str = "127.0.0.1"
    port: int = 0
    bot_name: str = "HPS"
    guild_name: str = "Generation Lab"
    channel_names: tuple[str, ...] = ("generations", "midjourney", "general")
    calls: list[RecordedCall] = field(default_factory=list)
    # The bot token Discord accepts (None: any). A wrong one gets 401 on REST and the fatal
    # close code 4004 on the gateway.
    token: str | None = None
    # Whether the application may use the privileged intents (Message Content): if not, an
    # IDENTIFY asking for them is closed with the fatal code 4014.
    privileged_intents_allowed: bool = True
    # A session holding more guilds than this is closed with 4011 "Sharding required".
    max_guilds_per_shard: int = MAX_GUILDS_PER_SHARD
    # The ``shards`` GET /gateway/bot recommends (None: one per 1,000 guilds, as Discord does).
    gateway_shards: int | None = None

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self.application_id = snowflake(self._ids)
        self.bot_user = user_payload(snowflake(self._ids), self.bot_name, bot=True)
        self.users: dict[int, dict[str, Any]] = {int(self.bot_user["id"]): self.bot_user}
        self.guilds: dict[int, GuildState] = {}
        self.channels: dict[str, int] = {}
        self.channel_guild: dict[int, int] = {}
        self.messages: dict[int, dict[int, dict[str, Any]]] = {}
        self.guild_id = self._new_guild(self.guild_name, self.channel_names)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.sessions: dict[str, GatewaySession] = {}
        self.interactions: dict[str, InteractionRecord] = {}
        self.reactions: dict[int, dict[str, list[int]]] = {}  # message -> emoji -> user ids
        self.posts: list[PostRecord] = []
        self.commands: dict[str, dict[str, Any]] = {}  # registered by the bot (PUT)
        self.ack_deadline_s = INTERACTION_ACK_DEADLINE_S
        self.token_lifetime_s = INTERACTION_TOKEN_LIFETIME_S
        self.upload_limit = ATTACHMENT_SIZE_LIMIT
        self._pending_429 = 0
        self._runner: web.AppRunner | None = None

    def _new_guild(
        self, name: str, channel_names: tuple[str, ...], shard: tuple[int, int] | None = None
    ) -> int:
        guild_id = snowflake(self._ids)
        if shard is not None:  # move the timestamp part until the id falls in that shard
            shard_id, count = shard
            timestamp = guild_id >> 22
            timestamp += (shard_id - timestamp) % count
            guild_id = (timestamp << 22) | (guild_id & 0x3FFFFF)
        taken = [c for c in channel_names if c in self.channels]
        if taken:
            raise ValueError(f"channel names are unique across guilds: {taken} exist")
        channels = {channel: snowflake(self._ids) for channel in channel_names}
        self.guilds[guild_id] = GuildState(guild_id, name, channels)
        for channel_id in channels.values():
            self.channel_guild[channel_id] = guild_id
            self.messages[channel_id] = {}
        self.channels.update(channels)
        return guild_id

    @property
    def admins(self) -> set[int]:
        """The admins of the first guild."""
        return self.guilds[self.guild_id].admins

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    async def start(self) -> DiscordEmulator:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/attachments/{key}/{filename}", self._cdn)
        app.router.add_route("*", API_PREFIX + "/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        await self.drop_connections(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- scripting -----------------------------------------------------------------------
    async def add_guild(
        self,
        name: str,
        channel_names: tuple[str, ...],
        *,
        shard: tuple[int, int] | None = None,
    ) -> int:
        """Another guild the bot is in (channel names unique across guilds); the connected
        sessions of its shard get its GUILD_CREATE. With ``shard`` (id, count) its id is
        chosen so that ``(guild_id >> 22) % count == id``. Returns its id."""
        guild_id = self._new_guild(name, channel_names, shard)
        await self.dispatch("GUILD_CREATE", self._guild_payload(guild_id))
        return guild_id

    def add_user(
        self, name: str, *, bot: bool = False, admin: bool = False, guild_id: int | None = None
    ) -> int:
        """A member of every guild (or another bot); with ``admin`` an administrator of
        ``guild_id`` (the first guild by default) only. Returns its id."""
        user_id = snowflake(self._ids)
        self.users[user_id] = user_payload(user_id, name, bot=bot)
        if admin:
            self.guilds[guild_id or self.guild_id].admins.add(user_id)
        return user_id

    def guild_of(self, channel_id: int) -> int:
        """The guild a channel belongs to."""
        return self.channel_guild[channel_id]

    def _member(self, user_id: int, guild_id: int | None = None) -> dict[str, Any]:
        admins = self.guilds[guild_id or self.guild_id].admins
        return {
            "user": self.users[user_id],
            "roles": [],
            "joined_at": datetime.now(UTC).isoformat(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": ADMIN_PERMISSIONS if user_id in admins else MEMBER_PERMISSIONS,
        }

    async def inject_slash_command(
        self,
        user_id: int,
        channel: str,
        name: str,
        options: list[dict[str, Any]] | None = None,
        attachments: Sequence[AttachmentSpec] | None = None,
    ) -> str:
        """A user runs ``/name`` with ``options`` (ready-made Discord option dicts; an
        attachment option's value is the index into ``attachments``). Returns the token.
        Options that break the constraints the bot registered raise OptionRefused: Discord
        would not send them."""
        if name in self.commands:
            check_options(options or [], self.commands[name].get("options", []))
        channel_id = self.channels[channel]
        resolved: dict[str, Any] = {}
        options = copy.deepcopy(options or [])  # attachment indexes are replaced below
        if attachments:
            stored = self._store_attachments(channel_id, attachments)
            resolved["attachments"] = {a["id"]: a for a in stored}
            _replace_attachment_indexes(options, [a["id"] for a in stored])
        channel_ids = _option_values(options, 7)
        if channel_ids:
            resolved["channels"] = {
                str(cid): {**self._channel_payload(int(cid)), "permissions": ADMIN_PERMISSIONS}
                for cid in channel_ids
            }
        data = {
            "id": str(snowflake(self._ids)),
            "name": name,
            "type": 1,
            "options": options,
            "resolved": resolved,
        }
        return await self._interaction(user_id, channel_id, 2, data)

    async def click_button(self, user_id: int, message: dict[str, Any], custom_id: str) -> str:
        """A user presses the button ``custom_id`` on ``message``. Returns the token."""
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interaction(user_id, int(message["channel_id"]), 3, data, message)

    async def _interaction(
        self,
        user_id: int,
        channel_id: int,
        kind: int,
        data: dict[str, Any],
        message: dict[str, Any] | None = None,
    ) -> str:
        interaction_id = snowflake(self._ids)
        token = f"token-{interaction_id}"
        guild_id = self.guild_of(channel_id)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": str(guild_id),
            "channel_id": str(channel_id),
            "channel": self._channel_payload(channel_id),
            "member": self._member(user_id, guild_id),
            "data": data,
            "app_permissions": ADMIN_PERMISSIONS,
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": self.upload_limit,
        }
        if message is not None:
            payload["message"] = message
        self.interactions[token] = InteractionRecord(
            interaction_id, token, channel_id, user_id, kind, guild_id=guild_id
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return token

    def _channel_payload(self, channel_id: int) -> dict[str, Any]:
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(self.guild_of(channel_id)),
            "name": self._channel_name(channel_id),
            "position": 0,
            "nsfw": False,
            "permission_overwrites": [],
            "parent_id": None,
        }

    def _channel_name(self, channel_id: int) -> str:
        return next(name for name, cid in self.channels.items() if cid == channel_id)

    async def inject_reaction(
        self, user_id: int, message: dict[str, Any], emoji: str, *, dispatch: bool = True
    ) -> None:
        """A user reacts to ``message`` with a unicode ``emoji`` (kept on the message, so that
        history and the reaction-users route show it later; without ``dispatch`` only
        there)."""
        users = self.reactions.setdefault(int(message["id"]), {}).setdefault(emoji, [])
        if user_id not in users:
            users.append(user_id)
        self._refresh_reactions(message)
        guild_id = self.guild_of(int(message["channel_id"]))
        if not dispatch:
            return
        await self.dispatch(
            "MESSAGE_REACTION_ADD",
            {
                "user_id": str(user_id),
                "channel_id": message["channel_id"],
                "message_id": message["id"],
                "guild_id": str(guild_id),
                "emoji": {"id": None, "name": emoji},
                "member": self._member(user_id, guild_id),
                "burst": False,
                "type": 0,
            },
        )

    async def remove_reaction(self, user_id: int, message: dict[str, Any], emoji: str) -> None:
        """A user takes back their ``emoji`` reaction (MESSAGE_REACTION_REMOVE)."""
        by_emoji = self.reactions.get(int(message["id"]), {})
        if user_id in by_emoji.get(emoji, []):
            by_emoji[emoji].remove(user_id)
            if not by_emoji[emoji]:
                del by_emoji[emoji]
        self._refresh_reactions(message)
        await self.dispatch(
            "MESSAGE_REACTION_REMOVE",
            {
                "user_id": str(user_id),
                "channel_id": message["channel_id"],
                "message_id": message["id"],
                "guild_id": str(self.guild_of(int(message["channel_id"]))),
                "emoji": {"id": None, "name": emoji},
                "burst": False,
                "type": 0,
            },
        )

    async def remove_all_reactions(self, message: dict[str, Any]) -> None:
        """A moderator clears every reaction of ``message`` (MESSAGE_REACTION_REMOVE_ALL)."""
        self.reactions.pop(int(message["id"]), None)
        self._refresh_reactions(message)
        await self.dispatch(
            "MESSAGE_REACTION_REMOVE_ALL",
            {
                "channel_id": message["channel_id"],
                "message_id": message["id"],
                "guild_id": str(self.guild_of(int(message["channel_id"]))),
            },
        )

    async def remove_reaction_emoji(self, message: dict[str, Any], emoji: str) -> None:
        """A moderator removes every ``emoji`` reaction of ``message``
        (MESSAGE_REACTION_REMOVE_EMOJI)."""
        self.reactions.get(int(message["id"]), {}).pop(emoji, None)
        self._refresh_reactions(message)
        await self.dispatch(
            "MESSAGE_REACTION_REMOVE_EMOJI",
            {
                "channel_id": message["channel_id"],
                "message_id": message["id"],
                "guild_id": str(self.guild_of(int(message["channel_id"]))),
                "emoji": {"id": None, "name": emoji},
            },
        )

    def _refresh_reactions(self, message: dict[str, Any]) -> None:
        """The stored message's reaction summary, as history and fetches show it."""
        stored = self.messages[int(message["channel_id"])].get(int(message["id"]))
        if stored is None:
            return
        stored["reactions"] = [
            {
                "emoji": {"id": None, "name": name},
                "count": len(who),
                "count_details": {"burst": 0, "normal": len(who)},
                "me": int(self.bot_user["id"]) in who,
                "me_burst": False,
                "burst_colors": [],
            }
            for name, who in self.reactions.get(int(message["id"]), {}).items()
            if who
        ]

    async def delete_message(self, message: dict[str, Any]) -> None:
        """A message disappears (deleted by its author or a moderator)."""
        channel_id, message_id = int(message["channel_id"]), int(message["id"])
        self.messages[channel_id].pop(message_id, None)
        await self.dispatch(
            "MESSAGE_DELETE",
            {
                "id": str(message_id),
                "channel_id": str(channel_id),
                "guild_id": str(self.guild_of(channel_id)),
            },
        )

    async def bulk_delete(self, messages: list[dict[str, Any]]) -> None:
        """A moderator deletes several messages of one channel at once (a purge)."""
        channel_id = int(messages[0]["channel_id"])
        for message in messages:
            self.messages[channel_id].pop(int(message["id"]), None)
        await self.dispatch(
            "MESSAGE_DELETE_BULK",
            {
                "ids": [message["id"] for message in messages],
                "channel_id": str(channel_id),
                "guild_id": str(self.guild_of(channel_id)),
            },
        )

    def fail_next_with_429(self, count: int = 1) -> None:
        """Answer the next ``count`` REST calls with a rate limit (retry after 0.2 s)."""
        self._pending_429 += count

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway connection. Sessions survive (4000 is resumable: the client
        RESUMEs and gets what it missed); see ``invalidate_sessions`` to force re-IDENTIFY."""
        for session in list(self.sessions.values()):
            if session.connected:
                assert session.socket is not None
                await session.socket.close(code=code)

    async def invalidate_sessions(self, shard_id: int | None = None) -> None:
        """Forget every session (or those of shard ``shard_id``) and drop its connection: the
        RESUME that follows gets INVALID_SESSION and the client must IDENTIFY again; what was
        dispatched meanwhile is lost to it (a history backfill must recover it)."""
        doomed = [
            s
            for s in self.sessions.values()
            if shard_id is None or (s.shard is not None and s.shard[0] == shard_id)
        ]
        sockets = [s.socket for s in doomed if s.connected]
        for session in doomed:
            del self.sessions[session.session_id]
        for socket in sockets:
            assert socket is not None
            await socket.close(code=4000)

    async def inject_message(
        self,
        channel: str,
        author_id: int,
        content: str = "",
        attachments: Sequence[AttachmentSpec] | None = None,
        *,
        reply_to: dict[str, Any] | None = None,
        components: list[Any] | None = None,
        dispatch: bool = True,
    ) -> dict[str, Any]:
        """A message posted by a user or another bot (attachments: name, bytes, MIME type),
        optionally as a reply to another message and with buttons. Without ``dispatch`` it
        is only history: posted while the bot was away, seen only by reading the channel."""
        message = self._store_message(
            self.channels[channel], self.users[author_id], content, attachments or [], components
        )
        if reply_to is not None:
            message["type"] = 19
            message["message_reference"] = {
                "type": 0,
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
                "guild_id": str(self.guild_of(int(reply_to["channel_id"]))),
            }
            message["referenced_message"] = reply_to
        if dispatch:
            await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway event to every session of its guild's shard (all of them when they
        did not shard; an event without a guild goes to shard 0)."""
        guild_id = _event_guild(event, data)
        for session in list(self.sessions.values()):
            if session.serves(guild_id):
                await session.send(event, data, guild_id)

    def sessions_of_shard(self, shard_id: int) -> list[GatewaySession]:
        """The sessions that identified as ``shard_id`` (of any count)."""
        return [s for s in self.sessions.values() if s.shard and s.shard[0] == shard_id]

    def calls_to(self, method: str, fragment: str) -> list[RecordedCall]:
        """The recorded REST calls of a method whose path contains ``fragment``."""
        return [c for c in self.calls if c.method == method and fragment in c.path]

    # -- data ----------------------------------------------------------------------------
    def _store_attachments(
        self, channel_id: int, attachments: Sequence[AttachmentSpec]
    ) -> list[dict[str, Any]]:
        """Attachments ``(filename, bytes, MIME type[, description])``; the description is
        the alt text, sent by Discord only when set."""
        stored = []
        for filename, data, content_type, *rest in attachments:
            attachment_id = snowflake(self._ids)
            key = f"{channel_id}-{attachment_id}"
            self.files[key] = (data, content_type)
            url = f"{self.base_url}/cdn/attachments/{key}/{filename}"
            attachment = {
                "id": str(attachment_id),
                "filename": filename,
                "size": len(data),
                "url": url,
                "proxy_url": url,
                "content_type": content_type,
            }
            if rest and rest[0]:
                attachment["description"] = str(rest[0])
            stored.append(attachment)
        return stored

    def _store_message(
        self,
        channel_id: int,
        author: dict[str, Any],
        content: str,
        attachments: Sequence[AttachmentSpec],
        components: list[Any] | None = None,
    ) -> dict[str, Any]:
        message_id = snowflake(self._ids)
        stored_attachments = self._store_attachments(channel_id, attachments)
        message = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "guild_id": str(self.guild_of(channel_id)),
            "author": author,
            "content": content,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": stored_attachments,
            "embeds": [],
            "pinned": False,
            "type": 0,
            "components": components or [],
            "flags": 0,
        }
        self.messages[channel_id][message_id] = message
        return message

    def _guild_payload(self, guild_id: int) -> dict[str, Any]:
        guild = self.guilds[guild_id]
        channels: list[dict[str, Any]] = [
            {
                "id": str(cid),
                "type": 0,
                "name": name,
                "position": i,
                "guild_id": str(guild_id),
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
            }
            for i, (name, cid) in enumerate(guild.channels.items())
        ]
        members = [
            {
                "user": u,
                "roles": [],
                "joined_at": datetime.now(UTC).isoformat(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
            for u in self.users.values()
        ]
        return {
            "id": str(guild_id),
            "name": guild.name,
            "owner_id": self.bot_user["id"],
            "roles": [
                {
                    "id": str(guild_id),
                    "name": "@everyone",
                    "permissions": "1071698660929",
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                }
            ],
            "channels": channels,
            "members": members,
            "member_count": len(members),
            "threads": [],
            "emojis": [],
            "stickers": [],
            "features": [],
            "large": False,
            "unavailable": False,
            "joined_at": datetime.now(UTC).isoformat(),
            "presences": [],
            "voice_states": [],
        }

    # -- HTTP ----------------------------------------------------------------------------
    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # discord.py parses JSON only when the Content-Type is exactly application/json.
        return web.Response(
            body=json.dumps(data).encode(),
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    async def _cdn(self, request: web.Request) -> web.Response:
        entry = self.files.get(request.match_info["key"])
        if entry is None:
            return web.Response(status=404)
        data, content_type = entry
        return web.Response(body=data, headers={"Content-Type": content_type})

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body: Any = None
        files: list[tuple[str, bytes, str]] = []
        if request.content_type == "application/json":
            body = await request.json()
        elif request.content_type.startswith("multipart/"):
            body, files = await self._multipart(request)
        authorization = request.headers.get("Authorization", "")
        self.calls.append(
            RecordedCall(request.method, path, body, _bot_token(authorization) or None)
        )
        needs_token = self.token is not None and not path.startswith(
            ("/webhooks/", "/interactions/")
        )
        if needs_token and request.headers.get("Authorization") != f"Bot {self.token}":
            return self._json({"message": "401: Unauthorized", "code": 0}, status=401)
        if self._pending_429:
            self._pending_429 -= 1
            return self._json(
                {"message": "You are being rate limited.", "retry_after": 0.2, "global": False},
                status=429,
                headers={"Via": "1.1 google", "Retry-After": "1", "X-RateLimit-Scope": "user"},
            )
        try:
            return await self._route(request.method, path, body, files, request)
        except FormError as refusal:
            return self._json(refusal.response, status=refusal.status)

    async def _multipart(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes, str]]]:
        body: Any = None
        files: list[tuple[str, bytes, str]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "payload_json":
                body = json.loads(await part.text())
            elif part.filename:
                content_type = part.headers.get("Content-Type", "application/octet-stream")
                files.append((part.filename, bytes(await part.read()), content_type))
        return body, files

    async def _route(
        self,
        method: str,
        path: str,
        body: Any,
        files: list[tuple[str, bytes, str]],
        request: web.Request,
    ) -> web.Response:
        parts = path.strip("/").split("/")
        if path == "/users/@me" and method == "GET":
            return self._json(self.bot_user)
        if path == "/gateway/bot":
            shards = self.gateway_shards or recommended_shards(len(self.guilds))
            return self._json(
                {
                    "url": self.gateway_url,
                    "shards": shards,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 1000,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if path == "/oauth2/applications/@me":
            return self._json(
                {
                    "id": str(self.application_id),
                    "name": self.bot_name,
                    "icon": None,
                    "description": "",
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "verify_key": "0" * 64,
                    "flags": 0,
                    "owner": self.bot_user,
                }
            )
        if parts[0] == "applications" and "commands" in parts and method == "PUT":
            self.commands = {command["name"]: command for command in body or []}
            return self._json(
                [
                    {
                        **command,
                        "id": str(snowflake(self._ids)),
                        "application_id": str(self.application_id),
                        "version": "1",
                    }
                    for command in body or []
                ]
            )
        if parts[0] == "interactions" and len(parts) == 4 and parts[3] == "callback":
            return await self._interaction_callback(parts[2], body or {}, files)
        if parts[0] == "webhooks" and len(parts) >= 3:
            return await self._webhook(method, parts, body or {}, files)
        if parts[0] == "channels" and len(parts) >= 3 and parts[2] == "messages":
            return await self._messages(method, parts, body, files, request)
        if parts[0] == "channels" and len(parts) == 2 and method == "GET":
            if not parts[1].isdigit() or int(parts[1]) not in self.channel_guild:
                return self._json({"message": "Unknown Channel", "code": 10003}, status=404)
            return self._json(self._channel_payload(int(parts[1])))
        return self._json({"message": f"emulator: no route {method} {path}", "code": 0}, status=404)

    async def _messages(
        self,
        method: str,
        parts: list[str],
        body: Any,
        files: list[tuple[str, bytes, str]],
        request: web.Request,
    ) -> web.Response:
        channel_id = int(parts[1])
        channel = self.messages.get(channel_id)
        if channel is None:
            return self._json({"message": "Unknown Channel", "code": 10003}, status=404)
        if len(parts) == 3 and method == "POST":
            check_message_body(body or {}, files, upload_limit=self.upload_limit)
            message = await self._bot_message(channel_id, body or {}, files, via="channel")
            return self._json(message)
        if len(parts) == 3 and method == "GET":
            limit = int(request.query.get("limit", 50))
            ordered = sorted(channel, reverse=True)
            if "before" in request.query:
                ordered = [m for m in ordered if m < int(request.query["before"])]
            if "after" in request.query:
                # Discord answers with the oldest `limit` messages after the id, newest first.
                after = sorted(m for m in ordered if m > int(request.query["after"]))[:limit]
                return self._json([channel[m] for m in reversed(after)])
            return self._json([channel[m] for m in ordered[:limit]])
        if len(parts) == 6 and parts[4] == "reactions" and method == "GET":
            return self._reaction_users(int(parts[3]), parts[5], request)
        message_id = int(parts[3])
        if message_id not in channel:
            return self._json({"message": "Unknown Message", "code": 10008}, status=404)
        if method == "GET":
            return self._json(channel[message_id])
        if method == "PATCH":
            check_message_body(body or {}, files, upload_limit=self.upload_limit, editing=True)
            channel[message_id].update(
                {k: v for k, v in (body or {}).items() if k in ("content", "embeds", "components")}
            )
            channel[message_id]["edited_timestamp"] = datetime.now(UTC).isoformat()
            await self.dispatch("MESSAGE_UPDATE", channel[message_id])
            return self._json(channel[message_id])
        if method == "DELETE":
            del channel[message_id]
            await self.dispatch(
                "MESSAGE_DELETE",
                {
                    "id": str(message_id),
                    "channel_id": str(channel_id),
                    "guild_id": str(self.guild_of(channel_id)),
                },
            )
            return web.Response(status=204)
        return self._json({"message": "Method Not Allowed", "code": 0}, status=405)

    def _reaction_users(self, message_id: int, emoji: str, request: web.Request) -> web.Response:
        from urllib.parse import unquote

        users = self.reactions.get(message_id, {}).get(unquote(emoji), [])
        after = int(request.query.get("after", 0))
        limit = int(request.query.get("limit", 25))
        chosen = sorted(u for u in users if u > after)[:limit]
        return self._json([self.users[u] for u in chosen])

    # -- interactions ----------------------------------------------------------------------
    async def _bot_message(
        self,
        channel_id: int,
        data: dict[str, Any],
        files: Sequence[AttachmentSpec],
        *,
        via: str,
    ) -> dict[str, Any]:
        """A message the bot creates: stored, dispatched (unless ephemeral) and recorded in
        ``posts`` with whom it pinged."""
        message = self._store_message(
            channel_id, self.bot_user, data.get("content") or "", files, data.get("components")
        )
        message["embeds"] = data.get("embeds") or []
        message["flags"] = int(data.get("flags") or 0)
        ephemeral = bool(message["flags"] & EPHEMERAL)
        reference = data.get("message_reference") or {}
        replied = self.messages[channel_id].get(int(reference.get("message_id") or 0))
        pings = (
            Pings()  # only the invoking user sees it: nobody is notified
            if ephemeral
            else pings_of(
                message["content"],
                data.get("allowed_mentions"),
                replied_user=int(replied["author"]["id"]) if replied else None,
            )
        )
        message["mention_everyone"] = pings.everyone
        message["mentions"] = [self.users[u] for u in pings.users if u in self.users]
        message["mention_roles"] = [str(r) for r in pings.roles]
        self.posts.append(PostRecord(message, via, data.get("allowed_mentions"), pings, ephemeral))
        if ephemeral:  # seen by one user only: not in the channel's history
            self.messages[channel_id].pop(int(message["id"]))
        else:
            await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def _interaction_callback(
        self, token: str, body: dict[str, Any], files: list[tuple[str, bytes, str]]
    ) -> web.Response:
        record = self.interactions.get(token)
        late = record is not None and time.monotonic() - record.created_at > self.ack_deadline_s
        if record is None or late:  # Discord forgets an interaction not answered in 3 s
            return self._json({"message": "Unknown interaction", "code": 10062}, status=404)
        if record.callbacks:
            return self._json(
                {"message": "Interaction has already been acknowledged.", "code": 40060}, status=400
            )
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        if kind in (4, 7):
            check_message_body(data, files, upload_limit=self.upload_limit, editing=kind == 7)
        record.callbacks.append(kind)
        record.acknowledged_at = time.monotonic()
        if kind == 4:  # reply with a message
            record.original = await self._bot_message(
                record.channel_id, data, files, via="callback"
            )
            record.edits.append(record.original["content"])
        elif kind == 5:  # deferred: the later edit keeps the ephemerality chosen now
            record.deferred_flags = int(data.get("flags") or 0)
        resource: dict[str, Any] = {"type": kind}
        if record.original is not None:
            resource["message"] = record.original
        return self._json(
            {
                "interaction": {
                    "id": str(record.interaction_id),
                    "type": record.kind,
                    "response_message_id": record.original["id"] if record.original else None,
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(int(data.get("flags") or 0) & EPHEMERAL),
                },
                "resource": resource,
            }
        )

    async def _webhook(
        self,
        method: str,
        parts: list[str],
        body: dict[str, Any],
        files: list[tuple[str, bytes, str]],
    ) -> web.Response:
        # /webhooks/{application id}/{interaction token}[/messages/{id or @original}]
        record = self.interactions.get(parts[2])
        if record is None or parts[1] != str(self.application_id):
            return self._json({"message": "Unknown Webhook", "code": 10015}, status=404)
        if time.monotonic() - record.created_at > self.token_lifetime_s:
            return self._json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        if not record.callbacks:  # follow-ups need the interaction answered first
            return self._json({"message": "Unknown Webhook", "code": 10015}, status=404)
        if len(parts) == 3 and method == "POST":  # follow-up message
            check_message_body(body, files, upload_limit=self.upload_limit)
            if record.loading:
                # The first follow-up after a deferral IS the deferred response: it takes the
                # deferral's visibility, whatever flags it asks for.
                flags = (int(body.get("flags") or 0) & ~EPHEMERAL) | record.deferred_flags
                message = await self._bot_message(
                    record.channel_id, {**body, "flags": flags}, files, via="deferred_response"
                )
                record.original = message
                record.edits.append(message["content"])
            else:
                message = await self._bot_message(record.channel_id, body, files, via="followup")
            record.followups.append(message)
            return self._json(message)
        if len(parts) == 5 and parts[3] == "messages":
            if method == "PATCH":
                editing = record.original is not None
                check_message_body(body, files, upload_limit=self.upload_limit, editing=editing)
                if record.original is None:  # the deferred response gets its content
                    flags = (int(body.get("flags") or 0) & ~EPHEMERAL) | record.deferred_flags
                    record.original = await self._bot_message(
                        record.channel_id,
                        {**body, "flags": flags},
                        files,
                        via="deferred_response",
                    )
                else:
                    record.original.update(
                        {k: v for k, v in body.items() if k in ("content", "embeds", "components")}
                    )
                record.edits.append(record.original.get("content") or "")
                return self._json(record.original)
            if method == "GET" and record.original is not None:
                return self._json(record.original)
        return self._json({"message": "Unknown Message", "code": 10008}, status=404)

    # -- gateway -------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(max_msg_size=0)
        await socket.prepare(request)
        await socket.send_str(
            json.dumps({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        )
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            payload = json.loads(message.data)
            op = payload.get("op")
            if op == 1:  # heartbeat: always acknowledged
                await socket.send_str(json.dumps({"op": 11}))
            elif op == 2:
                data = payload.get("d") or {}
                refusal = self._identify_refusal(data)
                if refusal is not None:
                    await socket.close(code=refusal[0], message=refusal[1].encode())
                    break
                await self._identify(
                    socket, parse_shard(data.get("shard")), _bot_token(data.get("token"))
                )
            elif op == 6:
                await self._resume(socket, payload.get("d") or {})
        for session in self.sessions.values():
            if session.socket is socket:
                session.socket = None
        return socket

    def _identify_refusal(self, data: dict[str, Any]) -> tuple[int, str] | None:
        """The fatal close code and reason for a bad IDENTIFY, if it is one."""
        token = _bot_token(data.get("token"))
        if self.token is not None and token != self.token:
            return 4004, "Authentication failed."
        if not self.privileged_intents_allowed and int(data.get("intents") or 0) & (
            PRIVILEGED_INTENTS
        ):
            return 4014, "Disallowed intent(s)."
        return shard_refusal(
            data.get("shard"), list(self.guilds), max_guilds=self.max_guilds_per_shard
        )

    async def _identify(
        self,
        socket: web.WebSocketResponse,
        shard: tuple[int, int] | None = None,
        token: str | None = None,
    ) -> None:
        session = GatewaySession(
            f"session-{snowflake(self._ids)}", socket, shard=shard, token=token
        )
        self.sessions[session.session_id] = session
        guilds = [g for g in self.guilds if session.serves(g)]
        ready: dict[str, Any] = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        await session.send("READY", ready)
        for guild_id in guilds:
            await session.send("GUILD_CREATE", self._guild_payload(guild_id), guild_id)

    async def _resume(self, socket: web.WebSocketResponse, data: dict[str, Any]) -> None:
        session = self.sessions.get(str(data.get("session_id")))
        if session is None:
            await socket.send_str(json.dumps({"op": 9, "d": False}))  # not resumable
            return
        session.socket = socket
        session.resumes += 1
        last_seen = int(data.get("seq") or 0)
        for sequence, raw in session.sent:
            if sequence > last_seen:
                await socket.send_str(raw)
        await session.send("RESUMED", {})


def _bot_token(value: Any) -> str:
    """A bot token as IDENTIFY or an Authorization header carries it, without ``Bot ``."""
    return str(value or "").removeprefix("Bot ")


GUILD_EVENTS_KEYED_BY_ID = ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE")


def _event_guild(event: str, data: dict[str, Any]) -> int | None:
    """The guild a gateway event belongs to (which decides its shard), None for DMs."""
    if data.get("guild_id"):
        return int(data["guild_id"])
    if event in GUILD_EVENTS_KEYED_BY_ID and data.get("id"):
        return int(data["id"])
    return None


def point_discord_py_at(emulator: DiscordEmulator) -> None:
    """Make every discord.py client in this process talk to ``emulator``."""
    import discord.gateway
    import discord.http
    import yarl

    discord.http.Route.BASE = emulator.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(emulator.gateway_url)


async def run_forever(emulator: DiscordEmulator) -> None:  # pragma: no cover - manual use
    await emulator.start()
    print(f"Discord emulator on {emulator.base_url}")
    await asyncio.Event().wait()
