"""Create studies, tasks, comparisons and fits.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("algorithm", sa.String(length=32), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("relevance", sa.JSON(), nullable=True),
        sa.Column("prior", sa.JSON(), nullable=True),
        sa.Column("budget", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
    )

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_tasks_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("study_id", "name", name=op.f("uq_tasks_study_id_name")),
    )
    op.create_index(op.f("ix_tasks_study_id"), "tasks", ["study_id"])

    op.create_table(
        "comparisons",
        sa.Column("id", BigIntId, autoincrement=True, nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=True),
        sa.Column("features", sa.LargeBinary(), nullable=False),
        sa.Column("label", sa.Float(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_comparisons_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_comparisons_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comparisons")),
        sa.UniqueConstraint(
            "study_id", "client_id", name=op.f("uq_comparisons_study_id_client_id")
        ),
    )
    op.create_index(
        "ix_comparisons_study_id_task_id_phase",
        "comparisons",
        ["study_id", "task_id", "phase"],
    )
    op.create_index("ix_comparisons_study_id_id", "comparisons", ["study_id", "id"])

    op.create_table(
        "fits",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("relevance", sa.JSON(), nullable=True),
        sa.Column("diagnostics", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("confidence_radius", sa.Float(), nullable=True),
        sa.Column("theta", sa.LargeBinary(), nullable=True),
        sa.Column("basis", sa.LargeBinary(), nullable=True),
        sa.Column("curvature", sa.LargeBinary(), nullable=True),
        sa.Column("source_thetas", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_fits_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fits")),
    )
    op.create_index(op.f("ix_fits_study_id"), "fits", ["study_id"])
    op.create_index("ix_fits_status_created_at", "fits", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_fits_status_created_at", table_name="fits")
    op.drop_index(op.f("ix_fits_study_id"), table_name="fits")
    op.drop_table("fits")
    op.drop_index("ix_comparisons_study_id_id", table_name="comparisons")
    op.drop_index("ix_comparisons_study_id_task_id_phase", table_name="comparisons")
    op.drop_table("comparisons")
    op.drop_index(op.f("ix_tasks_study_id"), table_name="tasks")
    op.drop_table("tasks")
    op.drop_table("studies")
