"""arena: the human gate of LoRA promotion

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

arena_settings: one row per guild that changed its arena settings (gate on/off, min votes,
threshold, duels per candidate, votes per duel, how long a duel stays open, arena channel).
gate_runs: one per gated LoRA candidate (unique): the compared version (NULL: the base
generator), status running | passed | refused, the decision (JSON), the channel it posts to.
duels.gate_run_id: the run that scheduled a duel (deleting the run deletes its duels);
duels.job_id: the duel job queued for a scheduled duel (SET NULL when the job row goes).
duels.prompt_author_id: whose prompt a scheduled duel draws (forgetting them deletes it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
SURROGATE_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _create_arena_settings() -> None:
    op.create_table(
        "arena_settings",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("gate_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("min_votes", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("duels_per_candidate", sa.Integer(), nullable=False),
        sa.Column("votes_per_duel", sa.Integer(), nullable=False),
        sa.Column("duel_open_seconds", sa.Integer(), nullable=False),
        sa.Column("arena_channel_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", name=op.f("pk_arena_settings")),
    )


def _version_fk(column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        ["model_versions.id"],
        name=op.f(f"fk_gate_runs_{column}_model_versions"),
        ondelete="CASCADE",
    )


def _create_gate_runs() -> None:
    status = sa.Enum(
        "running",
        "passed",
        "refused",
        name="gate_run_status",
        native_enum=False,
        create_constraint=True,
        length=16,
    )
    op.create_table(
        "gate_runs",
        sa.Column("id", SURROGATE_KEY, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_id", SURROGATE_KEY, nullable=False),
        sa.Column("compared_id", SURROGATE_KEY, nullable=True),
        sa.Column("status", status, nullable=False),
        sa.Column("decision", JSON_DOCUMENT, nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        _version_fk("candidate_id"),
        _version_fk("compared_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_runs")),
        sa.UniqueConstraint("candidate_id", name=op.f("uq_gate_runs_candidate_id")),
    )
    with op.batch_alter_table("gate_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gate_runs_guild_id"), ["guild_id"])
        batch_op.create_index(batch_op.f("ix_gate_runs_compared_id"), ["compared_id"])


def upgrade() -> None:
    _create_arena_settings()
    _create_gate_runs()
    with op.batch_alter_table("duels", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gate_run_id", SURROGATE_KEY, nullable=True))
        batch_op.add_column(sa.Column("job_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("prompt_author_id", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_duels_gate_run_id"), ["gate_run_id"])
        batch_op.create_index(batch_op.f("ix_duels_prompt_author_id"), ["prompt_author_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_duels_prompt_author_id_discord_users"),
            "discord_users",
            ["prompt_author_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_duels_gate_run_id_gate_runs"),
            "gate_runs",
            ["gate_run_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_duels_job_id_jobs"), "jobs", ["job_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("duels", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_duels_prompt_author_id_discord_users"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_duels_prompt_author_id"))
        batch_op.drop_column("prompt_author_id")
        batch_op.drop_constraint(batch_op.f("fk_duels_job_id_jobs"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_duels_gate_run_id_gate_runs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_duels_gate_run_id"))
        batch_op.drop_column("job_id")
        batch_op.drop_column("gate_run_id")
    op.drop_table("gate_runs")
    op.drop_table("arena_settings")
