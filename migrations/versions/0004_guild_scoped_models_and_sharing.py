"""a model per guild, guild sharing, scores carry their guild and requester

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

guild_configs: ``sharing`` (private | pooled, default private): whether a guild's data may be
used beyond it (global training, exports across guilds).
model_versions: ``guild_id`` (None = global); existing versions become global. At most one
active version per kind *and guild* (was: per kind).
scores: ``guild_id`` and ``requester_id`` copied from the image's generation (existing rows
filled in), ``sample`` (image_id % 16), and the percentile index becomes (version, guild,
sample, score, requester).
generations: an index on ``guild_id`` (per-guild snapshots, stats and exports).
discord_users: a partial index of the opted-out users (the consent predicate's anti-join).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status = 'active'"
OPTED_OUT = "opted_out IS TRUE"


def upgrade() -> None:
    with op.batch_alter_table("guild_configs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "sharing",
                sa.Enum(
                    "private",
                    "pooled",
                    name="sharing",
                    native_enum=False,
                    create_constraint=True,
                    length=16,
                ),
                server_default="private",
                nullable=False,
            )
        )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("guild_id", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_model_versions_guild_id"), ["guild_id"])
        batch_op.drop_index(
            "uq_model_versions_one_active_per_kind",
            postgresql_where=sa.text(ACTIVE),
            sqlite_where=sa.text(ACTIVE),
        )
    # Expression index: created outside the batch (SQLite's table copy would not keep it).
    op.create_index(
        "uq_model_versions_one_active_per_guild",
        "model_versions",
        ["kind", sa.text("coalesce(guild_id, 0)")],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("guild_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("requester_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("sample", sa.SmallInteger(), server_default=sa.text("0"), nullable=False)
        )
    # Existing scores take their generation's guild and requester (portable correlated
    # subqueries; the table is copied once by the batch above at most).
    of_generation = (
        "(SELECT generations.{column} FROM images JOIN generations "
        "ON generations.id = images.generation_id WHERE images.id = scores.image_id)"
    )
    op.execute(
        "UPDATE scores SET guild_id = "
        + of_generation.format(column="guild_id")
        + ", requester_id = "
        + of_generation.format(column="requester_id")
        + ", sample = image_id % 16"
    )
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.drop_index("ix_scores_model_version_id_score")
        batch_op.create_index(
            "ix_scores_version_guild_score",
            ["model_version_id", "guild_id", "sample", "score", "requester_id"],
        )
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_generations_guild_id"), ["guild_id"])
    op.create_index(
        "ix_discord_users_opted_out",
        "discord_users",
        ["id"],
        postgresql_where=sa.text(OPTED_OUT),
        sqlite_where=sa.text(OPTED_OUT),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_discord_users_opted_out",
        table_name="discord_users",
        postgresql_where=sa.text(OPTED_OUT),
        sqlite_where=sa.text(OPTED_OUT),
    )
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_generations_guild_id"))
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.drop_index("ix_scores_version_guild_score")
        batch_op.create_index(
            "ix_scores_model_version_id_score", ["model_version_id", "score"], unique=False
        )
        batch_op.drop_column("sample")
        batch_op.drop_column("requester_id")
        batch_op.drop_column("guild_id")
    op.drop_index(
        "uq_model_versions_one_active_per_guild",
        table_name="model_versions",
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    # Guild versions cannot exist once versions have no guild: they go, scores with them.
    op.execute("DELETE FROM model_versions WHERE guild_id IS NOT NULL")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_guild_id"))
        batch_op.drop_column("guild_id")
    op.create_index(
        "uq_model_versions_one_active_per_kind",
        "model_versions",
        ["kind"],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    with op.batch_alter_table("guild_configs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_guild_configs_sharing"), type_="check")
        batch_op.drop_column("sharing")
