"""scores: (model_version_id, score) index for percentiles

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Replaces the single-column index on scores.model_version_id (now its prefix).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scores_model_version_id_score", ["model_version_id", "score"], unique=False
        )
        batch_op.drop_index("ix_scores_model_version_id")


def downgrade() -> None:
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.create_index("ix_scores_model_version_id", ["model_version_id"], unique=False)
        batch_op.drop_index("ix_scores_model_version_id_score")
