"""Queries shared by the services (kept out of the routers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Comparison, Fit, LabelCount, Study

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
    """Return the number of stored comparisons per task id, over all phases."""
    if not study_ids:
        return {}
    statement = (
        select(LabelCount.task_id, func.sum(LabelCount.count))
        .where(LabelCount.study_id.in_(study_ids))
        .group_by(LabelCount.task_id)
    )
    return {task_id: int(count) for task_id, count in session.execute(statement)}


def phase_label_counts(session: Session, study_id: str) -> list[tuple[int, str, int]]:
    """Return ``(task id, phase, stored comparisons)`` for every non-empty pair."""
    statement = select(LabelCount.task_id, LabelCount.phase, LabelCount.count).where(
        LabelCount.study_id == study_id
    )
    return [
        (task_id, phase, int(count))
        for task_id, phase, count in session.execute(statement)
    ]


def add_label_counts(
    session: Session, study_id: str, phase: str, counts: Mapping[int, int]
) -> None:
    """Add ``counts`` (comparisons just inserted, per task id) to ``label_counts``.

    Call it in the transaction that inserted the comparisons. SQLite and
    PostgreSQL get one ``INSERT ... ON CONFLICT DO UPDATE``. Other databases
    get an ``UPDATE`` and, for pairs without a row, an ``INSERT``, which is
    safe only while the caller holds the study row lock.
    """
    values = [
        {"study_id": study_id, "task_id": task_id, "phase": phase, "count": count}
        for task_id, count in counts.items()
        if count
    ]
    if not values:
        return
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        module = sqlite if dialect == "sqlite" else postgresql
        statement = module.insert(LabelCount).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=["study_id", "task_id", "phase"],
            set_={"count": LabelCount.count + statement.excluded.count},
        )
        session.execute(statement)
        return
    for row in values:
        result = session.execute(
            update(LabelCount)
            .where(
                LabelCount.study_id == study_id,
                LabelCount.task_id == row["task_id"],
                LabelCount.phase == phase,
            )
            .values(count=LabelCount.count + row["count"])
        )
        if result.rowcount == 0:
            session.execute(insert(LabelCount).values(row))


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
