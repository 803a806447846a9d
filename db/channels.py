"""Which channels are harvested, by which adapter (set by admins)."""

from __future__ import annotations

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


def harvest_adapter(session: Session, channel_id: int) -> str | None:
    """The adapter harvesting ``channel_id``, or None when the channel is not enabled."""
    return session.scalar(
        select(HarvestChannel.adapter).where(
            HarvestChannel.channel_id == channel_id, HarvestChannel.enabled.is_(True)
        )
    )


def disable_channel(session: Session, channel_id: int) -> bool:
    """Stop harvesting ``channel_id``; return whether it was enabled."""
    channel = session.get(HarvestChannel, channel_id)
    if channel is None or not channel.enabled:
        return False
    channel.enabled = False
    return True


def admin_role_ids(session: Session, guild_id: int) -> list[int]:
    """Roles whose members may use the admin commands (besides Administrator/Manage Server)."""
    return list(
        session.scalar(select(GuildConfig.admin_role_ids).where(GuildConfig.guild_id == guild_id))
        or []
    )


def generation_for_message(session: Session, message_id: int) -> int | None:
    """The generation posted in a Discord message, if it was harvested."""
    from db.models import Generation

    return session.scalar(select(Generation.id).where(Generation.source_message_id == message_id))


def harvested_channels(session: Session) -> list[tuple[int, str, int | None]]:
    """(channel id, adapter, last seen message id) of every enabled channel."""
    rows = session.execute(
        select(
            HarvestChannel.channel_id, HarvestChannel.adapter, HarvestChannel.last_seen_message_id
        ).where(HarvestChannel.enabled.is_(True))
    )
    return [(int(c), str(a), int(s) if s is not None else None) for c, a, s in rows]


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
