"""Queries shared by the services (kept out of the routers)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Comparison, Fit, Study

# Keeps every IN list far below the bind-parameter limits of SQLite (32,766)
# and PostgreSQL (65,535).
IN_CHUNK = 1000


def get_study(
    session: Session, study_id: str, *, for_update: bool = False
) -> Study | None:
    """Load a study with its tasks; ``for_update`` locks its row on PostgreSQL.

    SQLite has no row locks, and SQLAlchemy leaves ``FOR UPDATE`` out there;
    a write session holds SQLite's database-wide write lock instead.
    """
    statement = select(Study).where(Study.id == study_id)
    if for_update:
        statement = statement.with_for_update()
    return session.scalars(statement).one_or_none()


def label_counts(session: Session, study_ids: Sequence[str]) -> dict[int, int]:
    """Count stored comparisons per task id, over all phases."""
    if not study_ids:
        return {}
    statement = (
        select(Comparison.task_id, func.count())
        .where(Comparison.study_id.in_(study_ids))
        .group_by(Comparison.task_id)
    )
    return {task_id: count for task_id, count in session.execute(statement)}


def latest_fits(session: Session, study_ids: Sequence[str]) -> dict[str, Fit]:
    """Return the most recently created fit of each study that has one."""
    if not study_ids:
        return {}
    newest = (
        select(Fit.study_id, func.max(Fit.created_at).label("created_at"))
        .where(Fit.study_id.in_(study_ids))
        .group_by(Fit.study_id)
        .subquery()
    )
    statement = select(Fit).join(
        newest,
        (Fit.study_id == newest.c.study_id) & (Fit.created_at == newest.c.created_at),
    )
    return {fit.study_id: fit for fit in session.scalars(statement)}


def stored_hashes(
    session: Session, study_id: str, client_ids: Iterable[str]
) -> dict[str, str]:
    """Map each client id already stored in the study to its content hash."""
    ids = list(client_ids)
    found: dict[str, str] = {}
    for start in range(0, len(ids), IN_CHUNK):
        statement = select(Comparison.client_id, Comparison.content_hash).where(
            Comparison.study_id == study_id,
            Comparison.client_id.in_(ids[start : start + IN_CHUNK]),
        )
        for client_id, digest in session.execute(statement):
            found[client_id] = digest
    return found


COMPARISON_COLUMNS = (
    "study_id",
    "task_id",
    "client_id",
    "features",
    "label",
    "phase",
    "content_hash",
)


def insert_comparisons(session: Session, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert comparison rows given as tuples in ``COMPARISON_COLUMNS`` order.

    The rows go to the driver without SQLAlchemy's per-row parameter
    processing, which costs about as much as SQLite's own insert work:
    PostgreSQL through psycopg gets one ``COPY ... FROM STDIN``, SQLite one
    driver-level ``executemany``, and other databases a Core executemany.
    A unique violation raises :class:`sqlalchemy.exc.IntegrityError` on every
    path.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    columns = ", ".join(COMPARISON_COLUMNS)
    table = Comparison.__tablename__

    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        cursor = connection.connection.driver_connection.cursor()
        statement = f"COPY {table} ({columns}) FROM STDIN"
        try:
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        except dialect.loaded_dbapi.IntegrityError as exc:
            raise IntegrityError(statement, None, exc) from exc
        finally:
            cursor.close()
    elif dialect.name == "sqlite":
        markers = ", ".join("?" * len(COMPARISON_COLUMNS))
        connection.exec_driver_sql(
            f"INSERT INTO {table} ({columns}) VALUES ({markers})", list(rows)
        )
    else:
        values = [dict(zip(COMPARISON_COLUMNS, row, strict=True)) for row in rows]
        connection.execute(insert(Comparison.__table__), values)
