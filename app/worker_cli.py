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

from app.db.engine import is_sqlite

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


def run(args: argparse.Namespace, settings: Any) -> int:
    """Run the worker loop until SIGTERM or SIGINT; return the exit status."""
    from app.jobs import run_worker
    from app.metrics import start_worker_metrics_server

    process = WorkerProcessSettings()
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
