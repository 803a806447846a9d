"""Which channels are harvested, by which adapter (set by admins)."""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from db.models import GuildConfig, HarvestChannel, utcnow
from db.upsert import insert_for


def enable_channel(
    session: Session, guild_id: int, channel_id: int, adapter: str, enabled_by: int | None = None
) -> None:
    """Harvest ``channel_id`` with ``adapter`` (creating the guild's config if needed)."""
    now = utcnow()
    guild = insert_for(session, GuildConfig).values(
        guild_id=guild_id, admin_role_ids=[], created_at=now, updated_at=now
    )
    session.execute(guild.on_conflict_do_nothing(index_elements=["guild_id"]))
    channel = insert_for(session, HarvestChannel).values(
        channel_id=channel_id,
        guild_id=guild_id,
        adapter=adapter,
        enabled=True,
        enabled_by=enabled_by,
        created_at=now,
    )
    # Re-enabling forgets where harvesting stopped: what was posted while the channel was off
    # is not harvested behind the admin's back (a backfill can take it in deliberately).
    still_seen = case(
        (HarvestChannel.enabled.is_(True), HarvestChannel.last_seen_message_id), else_=None
    )
    session.execute(
        channel.on_conflict_do_update(
            index_elements=["channel_id"],
            set_={
                "adapter": adapter,
                "enabled": True,
                "enabled_by": enabled_by,
                "last_seen_message_id": still_seen,
            },
        )
    )


def harvest_adapter(session: Session, channel_id: int, guild_id: int | None = None) -> str | None:
    """The adapter harvesting ``channel_id`` (only if it is ``guild_id``'s, when given), or
    None when the channel is not enabled."""
    query = select(HarvestChannel.adapter).where(
        HarvestChannel.channel_id == channel_id, HarvestChannel.enabled.is_(True)
    )
    if guild_id is not None:
        query = query.where(HarvestChannel.guild_id == guild_id)
    return session.scalar(query)


def disable_channel(session: Session, channel_id: int, guild_id: int | None = None) -> bool:
    """Stop harvesting ``channel_id`` (only if it is ``guild_id``'s, when given); return
    whether it was enabled."""
    channel = session.get(HarvestChannel, channel_id)
    if channel is None or not channel.enabled:
        return False
    if guild_id is not None and channel.guild_id != guild_id:
        return False
    channel.enabled = False
    return True


def admin_role_ids(session: Session, guild_id: int) -> list[int]:
    """Roles whose members may use the admin commands (besides Administrator/Manage Server)."""
    return list(
        session.scalar(select(GuildConfig.admin_role_ids).where(GuildConfig.guild_id == guild_id))
        or []
    )


class HarvestedChannel(NamedTuple):
    channel_id: int
    adapter: str
    last_seen_message_id: int | None
    guild_id: int


def harvested_channels(
    session: Session, guild_ids: Collection[int] | None = None
) -> list[HarvestedChannel]:
    """Every enabled channel (optionally only those of ``guild_ids``: a bot process harvests
    the guilds of its own shards)."""
    query = select(
        HarvestChannel.channel_id,
        HarvestChannel.adapter,
        HarvestChannel.last_seen_message_id,
        HarvestChannel.guild_id,
    ).where(HarvestChannel.enabled.is_(True))
    if guild_ids is not None:
        query = query.where(HarvestChannel.guild_id.in_(list(guild_ids)))
    return [
        HarvestedChannel(int(c), str(a), int(s) if s is not None else None, int(g))
        for c, a, s, g in session.execute(query)
    ]


def last_seen_message(session: Session, channel_id: int) -> int | None:
    """The newest message id of ``channel_id`` that the bot has processed, if any."""
    value = session.scalar(
        select(HarvestChannel.last_seen_message_id).where(HarvestChannel.channel_id == channel_id)
    )
    return int(value) if value is not None else None


def advance_last_seen(session: Session, seen: dict[int, int]) -> None:
    """Move each channel's last seen message id forward to the given id (never backwards),
    so that a backfill after a restart starts where harvesting stopped."""
    from sqlalchemy import or_, update

    for channel_id, message_id in seen.items():
        session.execute(
            update(HarvestChannel)
            .where(
                HarvestChannel.channel_id == channel_id,
                or_(
                    HarvestChannel.last_seen_message_id.is_(None),
                    HarvestChannel.last_seen_message_id < message_id,
                ),
            )
            .values(last_seen_message_id=message_id)
        )
