"""outbox retries with backoff and dead letters; model_versions.checkpoint_sha256

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

outbox: ``next_attempt_at`` (a failing row is retried later, backing off, so it cannot hold
up the rows behind it) and ``dead_at`` (a row that will never post is set aside, its reason in
``last_error``); the pending index becomes a due index over both.
model_versions: ``checkpoint_sha256``, verified when a worker loads the checkpoint.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "delivered_at IS NULL"
DUE = "delivered_at IS NULL AND dead_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "next_attempt_at",
                sa.DateTime(timezone=True),
                server_default=sa.text("CURRENT_TIMESTAMP"),
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index("ix_outbox_pending", postgresql_where=sa.text(PENDING))
        batch_op.create_index(
            "ix_outbox_due",
            ["next_attempt_at", "id"],
            unique=False,
            postgresql_where=sa.text(DUE),
            sqlite_where=sa.text(DUE),
        )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("checkpoint_sha256")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_due", postgresql_where=sa.text(DUE))
        batch_op.create_index(
            "ix_outbox_pending",
            ["id"],
            unique=False,
            postgresql_where=sa.text(PENDING),
            sqlite_where=sa.text(PENDING),
        )
        batch_op.drop_column("dead_at")
        batch_op.drop_column("next_attempt_at")
