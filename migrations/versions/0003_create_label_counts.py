"""Create label_counts and fill it from the stored comparisons.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "label_counts",
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_label_counts_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_label_counts_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "study_id", "task_id", "phase", name=op.f("pk_label_counts")
        ),
    )
    # One grouped count over every stored comparison; runs once, inside the
    # migration's transaction.
    op.execute(
        "INSERT INTO label_counts (study_id, task_id, phase, count) "
        "SELECT study_id, task_id, phase, COUNT(*) FROM comparisons "
        "GROUP BY study_id, task_id, phase"
    )


def downgrade() -> None:
    op.drop_table("label_counts")
