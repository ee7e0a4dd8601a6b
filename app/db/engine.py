"""Engine and session factory for SQLite and PostgreSQL.

SQLite connections run in WAL mode with a busy timeout and foreign keys on.
pysqlite's own transaction handling is turned off so that SQLAlchemy emits
``BEGIN`` itself: a session created with ``write=True`` starts with
``BEGIN IMMEDIATE``, which takes SQLite's single write lock up front. Writers
then queue on the busy timeout instead of failing when a read snapshot turns
stale, and a writer always reads the rows committed by the writer before it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

WRITE_OPTION = "prefbudget_write"


def is_sqlite(url: str) -> bool:
    """Return whether ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def create_db_engine(
    url: str, *, sqlite_busy_timeout_ms: int = 30_000, pool_size: int = 10
) -> Engine:
    """Create an engine for ``url`` with the connection set-up described above."""
    if is_sqlite(url):
        return _create_sqlite_engine(url, sqlite_busy_timeout_ms)
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def _create_sqlite_engine(url: str, busy_timeout_ms: int) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
    )
    in_memory = make_url(url).database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" listener below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")

    return engine


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory bound to ``engine`` (objects survive commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def open_session(factory: sessionmaker[Session], *, write: bool) -> Session:
    """Open a session; ``write=True`` takes SQLite's write lock at ``BEGIN``.

    On PostgreSQL the flag changes nothing.
    """
    session = factory()
    if write:
        session.connection(execution_options={WRITE_OPTION: True})
    return session
