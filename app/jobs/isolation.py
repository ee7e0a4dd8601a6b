"""Computing fits in a child process at a lower CPU priority.

The in-process runner of ``prefbudget serve`` would otherwise run the solver
in a thread of the API process, where it competes with request handling for
the GIL and the CPU. :class:`FitProcess` keeps one spawned child process that
loads a fit's labels from the database and computes it. The API process only
claims the fit, sends heartbeats and stores the result.

The child lowers its priority with ``os.nice`` before it imports numpy, so
the BLAS threads that numpy starts inherit the lower priority as well.

This module imports nothing heavy at the top, because the child imports it
first and must call ``os.nice`` before numpy loads.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)

# How often the parent checks that the child is alive while waiting, in seconds.
POLL_SECONDS = 0.5


class ChildFitError(Exception):
    """A fit failed in the child process.

    ``retryable`` is false for solver errors (invalid or insufficient data),
    which would fail the same way again.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ChildConfig:
    """Database and priority settings of the child process."""

    database_url: str
    sqlite_busy_timeout_ms: int
    nice: int


def _child_main(connection: Connection, config: ChildConfig) -> None:
    """Serve fit ids from ``connection`` until it sends None or closes."""
    if config.nice > 0 and hasattr(os, "nice"):
        os.nice(config.nice)

    from sqlalchemy.orm import Session

    from app.db.engine import create_db_engine, create_session_factory
    from app.services.fits import load_and_compute
    from solvers.errors import SolverError

    engine = create_db_engine(
        config.database_url, sqlite_busy_timeout_ms=config.sqlite_busy_timeout_ms
    )
    factory = create_session_factory(engine)
    try:
        while True:
            try:
                fit_id = connection.recv()
            except EOFError:
                return
            if fit_id is None:
                return
            try:
                session: Session
                with factory() as session:
                    reply: tuple[Any, ...] = ("ok", load_and_compute(session, fit_id))
            except SolverError as error:
                reply = ("error", f"{type(error).__name__}: {error}", False)
            except Exception as error:
                reply = ("error", f"{type(error).__name__}: {error}", True)
            connection.send(reply)
    finally:
        engine.dispose()


class FitProcess:
    """One spawned child process that computes fits on request.

    Not thread-safe: one runner thread uses it. The child is started on the
    first request and again after it died.
    """

    def __init__(self, config: ChildConfig) -> None:
        self.config = config
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._connection: Connection | None = None

    def _ensure_started(self) -> Connection:
        if self._process is not None and self._process.is_alive():
            assert self._connection is not None
            return self._connection
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_child_main,
            args=(child, self.config),
            name="prefbudget-fit-child",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._connection = parent
        logger.info(
            "fit.child_started pid=%s nice=%d", self._process.pid, self.config.nice
        )
        return parent

    def compute(self, fit_id: str) -> Any:
        """Load and compute ``fit_id`` in the child; return its ``FitComputation``.

        Raises :class:`ChildFitError` when the fit failed or the child died.
        """
        connection = self._ensure_started()
        process = self._process
        connection.send(fit_id)
        while not connection.poll(POLL_SECONDS):
            if not process.is_alive():
                code = process.exitcode
                self._process = None
                raise ChildFitError(
                    f"the fit process exited with code {code} during the fit",
                    retryable=True,
                )
        try:
            reply = connection.recv()
        except (EOFError, OSError) as error:
            self._process = None
            raise ChildFitError(
                "the fit process closed its connection during the fit", retryable=True
            ) from error
        if reply[0] == "ok":
            return reply[1]
        raise ChildFitError(reply[1], retryable=reply[2])

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the child to exit; terminate it when it does not within ``timeout``.

        The child reads the request to exit only after a running fit, so a
        fit gets ``timeout`` seconds to finish. A terminated fit is queued
        again by the runner thread.
        """
        process = self._process
        if process is None:
            return
        try:
            if self._connection is not None:
                self._connection.send(None)
        except OSError:
            pass
        process.join(timeout)
        if process.is_alive():
            logger.warning("fit.child_terminated pid=%s", process.pid)
            process.terminate()
            process.join(5)
        self._process = None
