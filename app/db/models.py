"""ORM models: studies, their tasks, comparisons (labels), label counts and fits.

Feature vectors and fitted arrays are stored as little-endian float64 bytes
(see :mod:`app.db.codec`), never as JSON text. A fit row is also its own job
in the fit queue: workers claim ``status = 'queued'`` rows, on PostgreSQL with
``SELECT ... FOR UPDATE SKIP LOCKED`` ordered by ``created_at``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from app.db.base import Base


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    SQLite stores no offset, so values read back are naive; this type converts
    values to UTC before storing and marks values read back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

ALGORITHMS = ("known_relevance", "active")
PHASES = ("pilot", "main", "complete")
TASK_ROLES = ("source", "target")
FIT_STATUSES = ("queued", "running", "succeeded", "failed")
FIT_TRIGGERS = ("auto", "manual")


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def new_uuid() -> str:
    """Return a random UUID4 in its 36-character text form."""
    return str(uuid.uuid4())


class Study(Base):
    """One labeling campaign: a target task, its source tasks and budgets."""

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(200))
    dimension: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    algorithm: Mapped[str] = mapped_column(String(32))
    phase: Mapped[str] = mapped_column(String(16))
    relevance: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    prior: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    budget: Mapped[dict[str, Any]] = mapped_column(JSON)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow
    )

    tasks: Mapped[list[Task]] = relationship(
        back_populates="study",
        order_by="Task.position",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class Task(Base):
    """A source or target task of a study; ``position`` orders the sources."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("study_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)

    study: Mapped[Study] = relationship(back_populates="tasks")


class Comparison(Base):
    """One pairwise-preference label.

    ``features`` contains ``phi(s, a1) - phi(s, a2)`` as ``dimension``
    little-endian float64 values. ``content_hash`` is the SHA-256 of task name,
    features and label, and decides whether a replayed ``client_id`` is a
    duplicate or a conflict.
    """

    __tablename__ = "comparisons"
    __table_args__ = (
        UniqueConstraint("study_id", "client_id"),
        Index("ix_comparisons_study_id_task_id_phase", "study_id", "task_id", "phase"),
        Index("ix_comparisons_study_id_id", "study_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    client_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    features: Mapped[bytes] = mapped_column(LargeBinary)
    label: Mapped[float] = mapped_column(Float)
    phase: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(64))
    # Filled by the database, so bulk inserts pass no per-row timestamp. SQLite's
    # CURRENT_TIMESTAMP has one-second resolution; export order uses `id`.
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=text("CURRENT_TIMESTAMP")
    )


class LabelCount(Base):
    """Number of stored comparisons of one task in one phase.

    Equal to ``COUNT(*)`` of ``comparisons`` grouped by study, task and phase:
    the transaction that inserts comparisons adds their number here
    (:func:`app.db.queries.add_label_counts`), so quota checks read one row per
    task and phase instead of counting every label of the study.
    """

    __tablename__ = "label_counts"

    study_id: Mapped[str] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    task_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    phase: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class Fit(Base):
    """A model fit of one study, and the job that computes it.

    Arrays (``theta``, ``basis``, ``curvature``, ``source_thetas``) are stored
    as little-endian float64 bytes. Their shapes follow from the study's
    dimension, the fit's ``rank`` and the number of source tasks.
    """

    __tablename__ = "fits"
    __table_args__ = (Index("ix_fits_status_created_at", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    study_id: Mapped[str] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="queued")
    phase: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16), default="manual")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    labels: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    relevance: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    diagnostics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    confidence_radius: Mapped[float | None] = mapped_column(Float, nullable=True)
    theta: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    basis: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    curvature: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    source_thetas: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
