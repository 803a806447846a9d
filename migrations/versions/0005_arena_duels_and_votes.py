"""arena: blind A/B duels and their votes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

duels: one blind A/B duel per row (guild, channel, posted message, prompt, the two sides'
model versions (NULL: the base generator), their images, status pending | open | closed,
deadline and vote limit). Indexed by (guild, status) and, for the close sweep, by the
deadline of the open ones.
duel_votes: one vote per user and duel (a | b | tie | both_bad); deleting a user or a duel
deletes its votes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
SURROGATE_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN = "status = 'open'"


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _version_fk(side: str) -> sa.ForeignKeyConstraint:
    column = f"version_{side}_id"
    return sa.ForeignKeyConstraint(
        [column],
        ["model_versions.id"],
        name=op.f(f"fk_duels_{column}_model_versions"),
        ondelete="CASCADE",
    )


def _create_duels() -> None:
    op.create_table(
        "duels",
        sa.Column("id", SURROGATE_KEY, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("prompt_id", SURROGATE_KEY, nullable=False),
        sa.Column("requested_by", sa.BigInteger(), nullable=True),
        sa.Column("generator", sa.String(length=128), nullable=False),
        sa.Column("version_a_id", SURROGATE_KEY, nullable=True),
        sa.Column("version_b_id", SURROGATE_KEY, nullable=True),
        sa.Column("image_a_sha256", sa.String(length=64), nullable=True),
        sa.Column("image_a_key", sa.String(length=256), nullable=True),
        sa.Column("image_b_sha256", sa.String(length=64), nullable=True),
        sa.Column("image_b_key", sa.String(length=256), nullable=True),
        sa.Column("params", JSON_DOCUMENT, nullable=False),
        sa.Column("status", _enum("duel_status", "pending", "open", "closed"), nullable=False),
        sa.Column("open_seconds", sa.Integer(), nullable=False),
        sa.Column("max_votes", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name=op.f("fk_duels_prompt_id_prompts")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["discord_users.id"],
            name=op.f("fk_duels_requested_by_discord_users"),
            ondelete="CASCADE",
        ),
        _version_fk("a"),
        _version_fk("b"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duels")),
        sa.UniqueConstraint("message_id", name=op.f("uq_duels_message_id")),
    )
    with op.batch_alter_table("duels", schema=None) as batch_op:
        batch_op.create_index("ix_duels_guild_id_status", ["guild_id", "status"])
        batch_op.create_index(batch_op.f("ix_duels_prompt_id"), ["prompt_id"])
        batch_op.create_index(batch_op.f("ix_duels_requested_by"), ["requested_by"])
        batch_op.create_index(batch_op.f("ix_duels_version_a_id"), ["version_a_id"])
        batch_op.create_index(batch_op.f("ix_duels_version_b_id"), ["version_b_id"])
    op.create_index(
        "ix_duels_open_closes_at",
        "duels",
        ["closes_at"],
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )


def _create_duel_votes() -> None:
    op.create_table(
        "duel_votes",
        sa.Column("id", SURROGATE_KEY, nullable=False),
        sa.Column("duel_id", SURROGATE_KEY, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("vote", _enum("duel_vote_kind", "a", "b", "tie", "both_bad"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["duel_id"], ["duels.id"], name=op.f("fk_duel_votes_duel_id_duels"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["discord_users.id"],
            name=op.f("fk_duel_votes_user_id_discord_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duel_votes")),
        sa.UniqueConstraint("duel_id", "user_id", name=op.f("uq_duel_votes_duel_id_user_id")),
    )
    with op.batch_alter_table("duel_votes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_duel_votes_user_id"), ["user_id"])


def upgrade() -> None:
    _create_duels()
    _create_duel_votes()


def downgrade() -> None:
    op.drop_table("duel_votes")
    op.drop_index(
        "ix_duels_open_closes_at",
        table_name="duels",
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )
    op.drop_table("duels")
