"""Whose data a request may touch: the one place that decides guild scope.

A guild member's or guild admin's request is scoped to their guild (:meth:`Scope.guild`): it
reads and changes that guild's generations, choices, scores, channels and model versions, and
nothing else. The operators' scope (:meth:`Scope.pooled`) spans the guilds whose sharing
setting is ``pooled``, plus rows that belong to no guild (datasets an operator imported), and
owns the global model versions. Every query that a command, a job or an export runs filters
through the expressions here, together with the consent predicate of :mod:`db.consent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db.consent import choice_consents, generation_consents
from db.models import Generation, GuildConfig, ModelVersion, Sharing, utcnow
from db.upsert import insert_for


@dataclass(frozen=True)
class Scope:
    """A guild (``guild_id``) or the operators' pooled scope (``guild_id`` None)."""

    guild_id: int | None

    @classmethod
    def guild(cls, guild_id: int) -> Scope:
        """One guild's scope."""
        return cls(int(guild_id))

    @classmethod
    def pooled(cls) -> Scope:
        """The operators' scope: pooled guilds and guildless rows; global model versions."""
        return cls(None)

    @classmethod
    def of_job(cls, guild_id: int | None, *, pooled: bool = False) -> Scope:
        """The scope a job runs in: its guild's, unless it was queued for the operators'
        pooled scope (``pooled``: an operator command; or no guild: the CLI)."""
        if pooled or guild_id is None:
            return cls.pooled()
        return cls.guild(guild_id)

    @property
    def is_pooled(self) -> bool:
        return self.guild_id is None

    def describe(self) -> str:
        """``guild <id>`` or ``pooled`` (for logs, cards and model metadata)."""
        return "pooled" if self.guild_id is None else f"guild {self.guild_id}"

    # -- data ------------------------------------------------------------------------
    def guild_condition(self, guild_column: Any) -> ColumnElement[bool]:
        """Rows whose guild (``guild_column``) is in scope."""
        if self.guild_id is not None:
            return guild_column == self.guild_id
        return or_(guild_column.is_(None), guild_column.in_(pooled_guilds_query()))

    def generations(self) -> ColumnElement[bool]:
        """Generations this scope may use: in scope, and consented (the query selects from
        or joins ``Generation``)."""
        return self.guild_condition(Generation.guild_id) & generation_consents()

    def choices(self) -> ColumnElement[bool]:
        """Choices this scope may use (the query joins ``Choice`` and ``Generation``)."""
        return self.guild_condition(Generation.guild_id) & choice_consents()

    def owns_generation(self) -> ColumnElement[bool]:
        """Generations a command of this scope may act on (rank, regenerate): the guild's own,
        whatever their consent (a user may rank their own opted-out generation)."""
        return self.guild_condition(Generation.guild_id)

    # -- models ----------------------------------------------------------------------
    def owns_model(self) -> ColumnElement[bool]:
        """Model versions this scope may promote, list and train on top of: the guild's own,
        or the global ones for the operators."""
        if self.guild_id is None:
            return ModelVersion.guild_id.is_(None)
        return ModelVersion.guild_id == self.guild_id

    def may_use_model(self) -> ColumnElement[bool]:
        """Model versions this scope may score with and name: the ones it owns, and for a
        guild the global ones too (its fallback); never another guild's."""
        if self.guild_id is None:
            return self.owns_model()
        return self.owns_model() | ModelVersion.guild_id.is_(None)

    def model_guild(self) -> int | None:
        """The ``guild_id`` a model version trained in this scope belongs to."""
        return self.guild_id


def pooled_guilds_query() -> Any:
    """SELECT of the ids of guilds that pool their data."""
    return select(GuildConfig.guild_id).where(GuildConfig.sharing == Sharing.pooled)


def pooled_guild_ids(session: Session) -> list[int]:
    """Ids of the guilds that pool their data, ascending."""
    return sorted(int(g) for g in session.scalars(pooled_guilds_query()))


def find_generation(
    session: Session,
    scope: Scope,
    *,
    message_id: int | None = None,
    generation_id: int | None = None,
) -> int | None:
    """The id of a generation (by its Discord message or its id) if it is in ``scope``;
    None otherwise, so that another guild's generation is indistinguishable from a missing
    one."""
    if (message_id is None) == (generation_id is None):
        raise ValueError("give exactly one of message_id and generation_id")
    key = (
        Generation.source_message_id == message_id
        if message_id is not None
        else Generation.id == generation_id
    )
    return session.scalar(select(Generation.id).where(key, scope.owns_generation()))


def set_sharing(session: Session, guild_id: int, sharing: Sharing) -> None:
    """Set a guild's sharing (creating its config if needed)."""
    now = utcnow()
    stmt = insert_for(session, GuildConfig).values(
        guild_id=guild_id, admin_role_ids=[], sharing=sharing, created_at=now, updated_at=now
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["guild_id"], set_={"sharing": sharing, "updated_at": now}
        )
    )


def sharing_of(session: Session, guild_id: int) -> Sharing:
    """A guild's sharing (private when it has no config yet)."""
    value = session.scalar(select(GuildConfig.sharing).where(GuildConfig.guild_id == guild_id))
    return Sharing(value) if value is not None else Sharing.private
