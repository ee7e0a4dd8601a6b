"""``prefbudget worker``: a process that runs queued fits until it is stopped.

Any number of workers and API replicas can share one PostgreSQL database:
each fit is claimed by one worker with ``SELECT ... FOR UPDATE SKIP LOCKED``,
and a fit whose worker died is queued again once its heartbeat is older than
``PREFBUDGET_FIT_STALE_SECONDS`` (see :mod:`app.jobs`). SIGTERM and SIGINT
stop the worker after the fit it is computing, if any, has been stored.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.exc import SQLAlchemyError

from app.db.engine import create_db_engine, is_sqlite

logger = logging.getLogger(__name__)


class WorkerProcessSettings(BaseSettings):
    """Settings of a ``prefbudget worker`` process beyond the fit queue's."""

    model_config = SettingsConfigDict(
        env_prefix="PREFBUDGET_", env_file=".env", extra="ignore"
    )

    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "TCP port on which `prefbudget worker` serves its Prometheus metrics "
            "(fit durations and failures of that worker). Unset: no metrics server."
        ),
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description=(
            "Address that the worker's metrics server listens on; 0.0.0.0 lets "
            "a Prometheus server on another host or container scrape it."
        ),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``prefbudget worker`` to ``parser``."""
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy database URL (default: PREFBUDGET_DATABASE_URL).",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="Serve Prometheus metrics on this port "
        "(default: PREFBUDGET_WORKER_METRICS_PORT, else no metrics server).",
    )


def check_database(settings: Any) -> str | None:
    """Connect to the database and compare its schema with the head revision.

    Returns None when both checks pass (as ``/readyz`` does), else a one-line
    message that names the problem and the fix.
    """
    from app.db import migrations
    from app.jobs.runner import describe_error

    engine = create_db_engine(
        settings.database_url,
        sqlite_busy_timeout_ms=getattr(settings, "sqlite_busy_timeout_ms", 30_000),
        pool_size=1,
    )
    try:
        current = migrations.current_revisions(engine)
    except SQLAlchemyError as error:
        return f"cannot connect to the database: {describe_error(error)}"
    finally:
        engine.dispose()
    heads = migrations.head_revisions()
    if current != heads:
        return (
            f"the database schema is at revision {sorted(current) or 'none'}, "
            f"expected {sorted(heads)}; run `prefbudget db upgrade`"
        )
    return None


def run(
    args: argparse.Namespace,
    settings: Any,
    process: WorkerProcessSettings | None = None,
) -> int:
    """Run the worker loop until SIGTERM or SIGINT; return the exit status.

    Returns 1 without starting the loop when the database is unreachable or
    its schema is not at the head revision. ``process`` defaults to
    ``WorkerProcessSettings()`` read from the environment.
    """
    from app.jobs import run_worker
    from app.metrics import start_worker_metrics_server

    process = process or WorkerProcessSettings()
    # The check opens an Alembic migration context, which logs two INFO lines
    # about the dialect. They are of no use to a worker, which runs no migrations.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    problem = check_database(settings)
    if problem is not None:
        logger.error("worker.database_not_ready: %s", problem)
        return 1

    metrics_port = getattr(args, "metrics_port", None) or process.worker_metrics_port
    if metrics_port:
        start_worker_metrics_server(process.worker_metrics_host, metrics_port)
    if is_sqlite(settings.database_url):
        logger.warning(
            "worker.sqlite: a separate worker on SQLite works, but SQLite lets "
            "one writer in at a time; `prefbudget serve` already runs fits itself"
        )

    stop_event = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("worker.stopping signal=%s", signal.Signals(signum).name)
        stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    run_worker(settings, stop_event)
    return 0
