"""SQLAlchemy 2 models of the platform (PostgreSQL in production, SQLite embedded).

Every Discord id is a BIGINT supplied by Discord (never generated here). Every row that a
Discord event can create twice has a natural unique key, so ingest is ``INSERT ... ON
CONFLICT`` and replays are harmless.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Surrogate keys: BIGINT identity on PostgreSQL, INTEGER (rowid alias) on SQLite.
SurrogateKey = BigInteger().with_variant(Integer(), "sqlite")
JsonDocument = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMP WITH TIME ZONE that always returns aware UTC datetimes, SQLite included
    (which stores them as text without an offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ConsentMode(enum.StrEnum):
    """How a guild treats its members' data: harvest everyone unless they opt out, or
    only members who opted in."""

    opt_out = "opt_out"
    opt_in = "opt_in"


class Sharing(enum.StrEnum):
    """Whether a guild's data may be used beyond it: ``private`` (its own models and exports
    only) or ``pooled`` (also global training and exports that span guilds)."""

    private = "private"
    pooled = "pooled"


class ChoiceMethod(enum.StrEnum):
    button = "button"
    reaction = "reaction"
    upscale = "upscale"
    vote = "vote"
    import_ = "import"


class ModelKind(enum.StrEnum):
    hps = "hps"
    lora = "lora"


class ModelStatus(enum.StrEnum):
    candidate = "candidate"
    active = "active"
    retired = "retired"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_JOB_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


def _enum(enum_cls: type[enum.Enum], name: str) -> Enum:
    # Stored as VARCHAR + CHECK (portable, and adding a value is a plain migration).
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda cls: [member.value for member in cls],
    )


class GuildConfig(Base):
    __tablename__ = "guild_configs"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    consent_mode: Mapped[ConsentMode] = mapped_column(
        _enum(ConsentMode, "consent_mode"), default=ConsentMode.opt_out
    )
    admin_role_ids: Mapped[list[int]] = mapped_column(JsonDocument, default=list)
    sharing: Mapped[Sharing] = mapped_column(
        _enum(Sharing, "sharing"), default=Sharing.private, server_default=Sharing.private.value
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    channels: Mapped[list[HarvestChannel]] = relationship(
        back_populates="guild", cascade="all, delete-orphan", passive_deletes=True
    )


class HarvestChannel(Base):
    __tablename__ = "harvest_channels"

    channel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    guild_id: Mapped[int] = mapped_column(
        ForeignKey("guild_configs.guild_id", ondelete="CASCADE"), index=True
    )
    adapter: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled_by: Mapped[int | None] = mapped_column(BigInteger)
    last_seen_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    guild: Mapped[GuildConfig] = relationship(back_populates="channels")


class DiscordUser(Base):
    __tablename__ = "discord_users"
    __table_args__ = (
        # The consent predicate (db.consent) anti-joins the few opted-out users: a small
        # partial index instead of a scan of every user. "IS TRUE" matches the predicate.
        Index(
            "ix_discord_users_opted_out",
            "id",
            postgresql_where=text("opted_out IS TRUE"),
            sqlite_where=text("opted_out IS TRUE"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opted_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    normalized_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Generation(Base):
    """One set of images produced for one prompt (one Discord message, or one job)."""

    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    source_message_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    # None: not from a guild (a dataset an operator imported, a DM).
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    channel_id: Mapped[int] = mapped_column(BigInteger, index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    requester_id: Mapped[int | None] = mapped_column(
        ForeignKey("discord_users.id", ondelete="CASCADE"), index=True
    )
    generator: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    prompt: Mapped[Prompt] = relationship()
    images: Mapped[list[Image]] = relationship(
        back_populates="generation",
        order_by="Image.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Image(Base):
    """One image of a generation. The same bytes may appear in several generations (a repost),
    so sha256 is indexed, not unique; the blob itself is stored once, content-addressed."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("generation_id", "position"),)

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(SmallInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(256))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    phash: Mapped[str] = mapped_column(String(32), default="")
    seed: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    generation: Mapped[Generation] = relationship(back_populates="images")


class Choice(Base):
    """One user's pick among the images of a generation; a new pick replaces the old one.
    ``chosen_image_id`` NULL means the user skipped (no image preferred)."""

    __tablename__ = "choices"
    __table_args__ = (UniqueConstraint("generation_id", "user_id"),)

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(
        ForeignKey("discord_users.id", ondelete="CASCADE"), index=True
    )
    chosen_image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    method: Mapped[ChoiceMethod] = mapped_column(_enum(ChoiceMethod, "choice_method"))
    source_message_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModelVersion(Base):
    """A version of an HPS model or a LoRA. It belongs to one guild (``guild_id``) or is
    global (None, the operators'); a guild uses its own active version of a kind, else the
    global one."""

    __tablename__ = "model_versions"
    __table_args__ = (
        # At most one active model per kind and guild (0 standing for global), enforced by the
        # database.
        Index(
            "uq_model_versions_one_active_per_guild",
            "kind",
            text("coalesce(guild_id, 0)"),
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
        UniqueConstraint("kind", "name"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    kind: Mapped[ModelKind] = mapped_column(_enum(ModelKind, "model_kind"))
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    name: Mapped[str] = mapped_column(String(128))
    checkpoint_key: Mapped[str] = mapped_column(String(512))
    architecture: Mapped[str] = mapped_column(String(64))
    status: Mapped[ModelStatus] = mapped_column(
        _enum(ModelStatus, "model_status"), default=ModelStatus.candidate
    )
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    trained_on: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    # sha256 of the checkpoint file as registered (fetched or trained); a load verifies it.
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Score(Base):
    """An image's score under one model version. ``guild_id`` and ``requester_id`` copy the
    image's generation (they never change), so that a guild's percentile is one index range
    count that also carries what the consent predicate needs; ``sample`` puts the image in one
    of 16 fixed samples."""

    __tablename__ = "scores"
    __table_args__ = (
        UniqueConstraint("image_id", "model_version_id"),
        # "How many of this community's scores under this version are lower": an index-only
        # range count (of one sample, for a big community); requester_id rides along for the
        # consent anti-join.
        Index(
            "ix_scores_version_guild_score",
            "model_version_id",
            "guild_id",
            "sample",
            "score",
            "requester_id",
        ),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    score: Mapped[float] = mapped_column(Float)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    requester_id: Mapped[int | None] = mapped_column(BigInteger)
    # image_id % SCORE_SAMPLES (db.scores): a fixed 1/16 sample of a big community's images,
    # from which its percentiles are estimated.
    sample: Mapped[int] = mapped_column(SmallInteger, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    """A unit of background work. Its id is also the Celery task id."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "job_status"), default=JobStatus.queued, index=True
    )
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[int | None] = mapped_column(BigInteger, index=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    interaction_token: Mapped[str | None] = mapped_column(Text)
    interaction_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    params: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When its task was handed to the broker. db.jobs.create_job writes NULL (its client sends
    # the task next; a NULL that outlives db.jobs.ORPHAN_AFTER is an orphan, sent by another);
    # a row written any other way counts as sent, as every row before this column did.
    sent_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), server_default=text("CURRENT_TIMESTAMP")
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OutboxMessage(Base):
    """A result waiting to be posted to Discord. Workers insert + NOTIFY; the bot delivers
    each row exactly once and stamps ``delivered_at``. A row that keeps failing is retried at
    ``next_attempt_at`` (backing off) and, when hopeless, stamped ``dead_at`` with the reason
    in ``last_error`` (a dead letter: kept for admins, never posted)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("delivered_at IS NULL AND dead_at IS NULL"),
            sqlite_where=text("delivered_at IS NULL AND dead_at IS NULL"),
        ),
        UniqueConstraint("dedupe_key"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    # Makes "finish job -> one outbox row" idempotent under task redelivery.
    dedupe_key: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DuelStatus(enum.StrEnum):
    """A duel's life: ``pending`` (created, images being generated, not posted), ``open``
    (posted, taking votes until ``closes_at`` or ``max_votes``), ``closed`` (revealed)."""

    pending = "pending"
    open = "open"
    closed = "closed"


class DuelVoteKind(enum.StrEnum):
    """A vote in a duel: side A, side B, a tie (both as good), or both bad."""

    a = "a"
    b = "b"
    tie = "tie"
    both_bad = "both_bad"


class Duel(Base):
    """A blind A/B duel between two generator configurations on one prompt, in one guild.

    A side is a configuration of the guild's generator (``generator``): the generator with a
    model version applied (``version_a_id``/``version_b_id``, a LoRA, or an HPS model that
    picked the best of n), or the plain base generator, which is NULL. Which configuration is
    side A was drawn at random when the duel was created (so the order the caller named them
    in says nothing). Images are set once generated (sha256 and storage key of the blob);
    ``message_id`` once posted. ``requested_by`` is None for duels the arena scheduled itself
    (the human gate: ``gate_run_id``); a requester who is forgotten takes their duels with
    them. A scheduled duel's prompt is a member's (``prompt_author_id``): their consent is
    needed to use its votes, and forgetting them takes the duel with them too."""

    __tablename__ = "duels"
    __table_args__ = (
        Index("ix_duels_guild_id_status", "guild_id", "status"),
        # The close sweep: open duels by deadline.
        Index(
            "ix_duels_open_closes_at",
            "closes_at",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    requested_by: Mapped[int | None] = mapped_column(
        ForeignKey("discord_users.id", ondelete="CASCADE"), index=True
    )
    generator: Mapped[str] = mapped_column(String(128))
    version_a_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    version_b_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    image_a_sha256: Mapped[str | None] = mapped_column(String(64))
    image_a_key: Mapped[str | None] = mapped_column(String(256))
    image_b_sha256: Mapped[str | None] = mapped_column(String(64))
    image_b_key: Mapped[str | None] = mapped_column(String(256))
    params: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    status: Mapped[DuelStatus] = mapped_column(
        _enum(DuelStatus, "duel_status"), default=DuelStatus.pending
    )
    open_seconds: Mapped[int] = mapped_column(Integer)
    max_votes: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closes_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    close_reason: Mapped[str | None] = mapped_column(String(16))
    # The human gate's run that scheduled this duel (None: a member asked for it).
    gate_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("gate_runs.id", ondelete="CASCADE"), index=True
    )
    # The duel job queued for a scheduled duel (set with the job's row, so it is queued once).
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # Whose words a scheduled duel's prompt is (the requester of its latest generation).
    prompt_author_id: Mapped[int | None] = mapped_column(
        ForeignKey("discord_users.id", ondelete="CASCADE"), index=True
    )


class DuelVote(Base):
    """One user's vote in a duel; a new vote replaces the old one while the duel is open."""

    __tablename__ = "duel_votes"
    __table_args__ = (UniqueConstraint("duel_id", "user_id"),)

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    duel_id: Mapped[int] = mapped_column(ForeignKey("duels.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(
        ForeignKey("discord_users.id", ondelete="CASCADE"), index=True
    )
    vote: Mapped[DuelVoteKind] = mapped_column(_enum(DuelVoteKind, "duel_vote_kind"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ArenaSettings(Base):
    """A guild's arena: whether LoRA candidates must pass the human gate before promotion,
    the gate's bar (``min_votes``, ``threshold`` for the win-rate interval's low end), how
    many duels it schedules per candidate, how many votes close one and how long one stays
    open, and the channel scheduled duels go to (None: where the adapt job reported)."""

    __tablename__ = "arena_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    gate_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    min_votes: Mapped[int] = mapped_column(Integer, default=30)
    threshold: Mapped[float] = mapped_column(Float, default=0.5)
    duels_per_candidate: Mapped[int] = mapped_column(Integer, default=6)
    votes_per_duel: Mapped[int] = mapped_column(Integer, default=10)
    duel_open_seconds: Mapped[int] = mapped_column(Integer, default=24 * 3600)
    arena_channel_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GateRunStatus(enum.StrEnum):
    """A gate run: ``running`` (its duels are scheduled or open), ``passed`` (the candidate
    won and was promoted) or ``refused`` (all its duels closed without a pass)."""

    running = "running"
    passed = "passed"
    refused = "refused"


class GateRun(Base):
    """The human gate of one LoRA candidate in one guild: its scheduled duels against the
    ``compared`` configuration (the guild's active LoRA when the run started, None: the base
    generator), and the decision (``GateDecision.to_dict``) once there is one."""

    __tablename__ = "gate_runs"
    __table_args__ = (UniqueConstraint("candidate_id"),)

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    compared_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[GateRunStatus] = mapped_column(
        _enum(GateRunStatus, "gate_run_status"), default=GateRunStatus.running
    )
    decision: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
