"""jobs.sent_at: when a job's task was handed to the broker

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

A job is recorded, then its task sent; a client that dies in between left it ``queued``
forever. ``sent_at`` is NULL only for a job recorded and not yet sent (db.jobs.create_job
writes NULL; enqueue_job stamps it), so such orphans can be found and sent. The column's
default is the current time, so rows written without it (an older client) count as sent;
the rows already there get their ``created_at``: nothing old is sent again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "sent_at",
                sa.DateTime(timezone=True),
                server_default=sa.text("CURRENT_TIMESTAMP"),
                nullable=True,
            )
        )
    op.execute("UPDATE jobs SET sent_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("sent_at")
