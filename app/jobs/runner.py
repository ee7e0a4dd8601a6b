"""Running fit jobs: one claimed fit, a worker loop, and the in-process runner.

:func:`run_claimed_fit` runs one fit in three transactions so that the
solver never computes while a database lock is held:

1. a read transaction loads the study and its labels;
2. the solver computes while a heartbeat thread refreshes ``heartbeat_at``
   in short write transactions. Steps 1 and 2 run in this thread, or in the
   child process of :mod:`app.jobs.isolation` for the in-process runner;
3. a short write transaction stores the result, but only if the fit still
   runs under this worker's claim (otherwise the stale-job sweep handed it to
   another worker, and that worker's result counts).

A solver error (invalid or insufficient data) fails the fit at once, since a
retry would give the same error. Any other exception uses one attempt and
queues the fit again until ``fit_max_attempts`` is reached. Either way the
previous succeeded fit keeps serving the model and policy endpoints.

:func:`run_worker` is the loop of a worker process; :class:`InProcessRunner`
runs the same loop in a thread of the API process and, by default, computes
the fits in a child process at a lower CPU priority.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.engine import create_db_engine, create_session_factory
from app.db.models import Fit
from app.jobs.config import FitQueueSettings, queue_settings
from app.jobs.isolation import ChildConfig, ChildFitError, FitProcess
from app.jobs.queue import (
    Claim,
    claim_next,
    heartbeat,
    owns,
    release,
    requeue_stale,
    transaction,
)
from app.logs import log_context
from app.metrics import record_fit
from app.services.fits import (
    FitComputation,
    compute_fit,
    load_fit_inputs,
    store_fit_success,
)
from solvers.errors import SolverError

logger = logging.getLogger(__name__)

# Maximum length of the error text stored on a fit row.
MAX_ERROR_CHARS = 4000

# Maximum wait in seconds between two failing iterations of a fit loop, unless
# ``fit_poll_seconds`` is longer.
MAX_BACKOFF_SECONDS = 30.0


def describe_error(error: BaseException) -> str:
    """Return ``Type: message`` of ``error`` on one line.

    For a SQLAlchemy error the driver's exception is used, so the message is
    the database's own (``database "x" does not exist``) without SQLAlchemy's
    statement and documentation link.
    """
    cause = getattr(error, "orig", None) or error
    message = " ".join(str(cause).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class LoopBackoff:
    """Wait between iterations of a fit loop: the poll interval, or longer after errors.

    Each failed iteration in a row doubles the wait, starting from twice
    ``poll_seconds``, up to ``max_seconds``. A successful iteration resets it.
    Every failure logs one ERROR line naming the error. Only the first failure
    of a run carries the traceback, and later ones log it at DEBUG.
    """

    def __init__(
        self,
        event_prefix: str,
        worker_id: str,
        poll_seconds: float,
        max_seconds: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.failures = 0
        self._event_prefix = event_prefix
        self._worker_id = worker_id
        self._poll_seconds = poll_seconds
        self._max_seconds = max(max_seconds, poll_seconds)

    def succeeded(self) -> float:
        """Reset the failure count; return the wait before the next iteration."""
        if self.failures:
            logger.info(
                "%s_recovered worker_id=%s failures=%d",
                self._event_prefix,
                self._worker_id,
                self.failures,
            )
        self.failures = 0
        return self._poll_seconds

    def failed(self, error: BaseException) -> float:
        """Log ``error``; return the wait before the next iteration."""
        self.failures += 1
        delay = min(self._poll_seconds * 2**self.failures, self._max_seconds)
        first = self.failures == 1
        logger.error(
            "%s_error worker_id=%s failures=%d error=%s; retrying in %.1f s",
            self._event_prefix,
            self._worker_id,
            self.failures,
            describe_error(error),
            delay,
            exc_info=error if first else None,
        )
        if not first:
            logger.debug("%s_error traceback", self._event_prefix, exc_info=error)
        return delay


def new_worker_id(kind: str = "worker") -> str:
    """Return a worker id naming the host, the process and a random suffix."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Heartbeat:
    """Background thread that refreshes a claimed fit's heartbeat until stopped."""

    def __init__(
        self, factory: sessionmaker[Session], claim: Claim, interval: float
    ) -> None:
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._factory = factory
        self._claim = claim
        self._interval = interval
        self._thread = threading.Thread(
            target=self._run, name=f"fit-heartbeat-{claim.fit_id[:8]}", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not heartbeat(self._factory, self._claim):
                    logger.warning(
                        "fit.heartbeat_lost fit_id=%s worker_id=%s",
                        self._claim.fit_id,
                        self._claim.worker_id,
                    )
                    self.lost.set()
                    return
            except Exception:
                # A missed heartbeat is not fatal: the next one may succeed
                # before the stale timeout.
                logger.exception("fit.heartbeat_failed fit_id=%s", self._claim.fit_id)


def compute_in_thread(factory: sessionmaker[Session], fit_id: str) -> FitComputation:
    """Load a fit's labels in a short read transaction, then compute it here."""
    with transaction(factory, write=False) as session:
        inputs = load_fit_inputs(session, fit_id)
    outcome = compute_fit(inputs)
    return FitComputation(inputs.phase, inputs.labels, inputs.completes_phase, outcome)


def run_claimed_fit(
    factory: sessionmaker[Session],
    claim: Claim,
    queue: FitQueueSettings,
    compute: Callable[[str], FitComputation] | None = None,
) -> str | None:
    """Load, compute and store one claimed fit; return its final status.

    ``compute`` maps a fit id to its :class:`FitComputation`; by default the
    fit is loaded and computed in this thread. Returns ``succeeded``,
    ``failed`` or ``queued`` (retry), or None when the claim was lost to the
    stale-job sweep before the result was written.
    """
    if compute is None:
        compute = partial(compute_in_thread, factory)
    started = time.perf_counter()
    with log_context(study_id=claim.study_id, fit_id=claim.fit_id):
        try:
            with _Heartbeat(factory, claim, queue.fit_heartbeat_seconds):
                computation = compute(claim.fit_id)
        except ChildFitError as error:
            return _record_failure(
                factory, claim, queue, started, str(error), retry=error.retryable
            )
        except SolverError as error:
            message = f"{type(error).__name__}: {error}"
            return _record_failure(factory, claim, queue, started, message, retry=False)
        except Exception as error:
            logger.exception(
                "fit.error fit_id=%s attempt=%d", claim.fit_id, claim.attempt
            )
            message = f"{type(error).__name__}: {error}"
            return _record_failure(factory, claim, queue, started, message, retry=True)

        elapsed = time.perf_counter() - started
        outcome = computation.outcome
        outcome.diagnostics["duration_seconds"] = round(elapsed, 6)
        outcome.diagnostics["attempt"] = claim.attempt
        outcome.diagnostics["worker_id"] = claim.worker_id
        with transaction(factory, write=True) as session:
            statement = select(Fit).where(owns(claim))
            if session.get_bind().dialect.name == "postgresql":
                statement = statement.with_for_update()
            fit = session.scalars(statement).first()
            if fit is None:
                logger.warning(
                    "fit.result_discarded fit_id=%s worker_id=%s reason=claim_lost",
                    claim.fit_id,
                    claim.worker_id,
                )
                return None
            new_phase = store_fit_success(session, fit, computation)

        record_fit(elapsed, succeeded=True)
        logger.info(
            "fit.succeeded fit_id=%s study_id=%s phase=%s rank=%d seconds=%.3f "
            "labels=%d new_phase=%s",
            claim.fit_id,
            claim.study_id,
            computation.phase,
            outcome.rank,
            elapsed,
            sum(computation.labels.values()),
            new_phase,
        )
        return "succeeded"


def _record_failure(
    factory: sessionmaker[Session],
    claim: Claim,
    queue: FitQueueSettings,
    started: float,
    message: str,
    *,
    retry: bool,
) -> str | None:
    elapsed = time.perf_counter() - started
    record_fit(elapsed, succeeded=False)
    status = release(
        factory,
        claim,
        message[:MAX_ERROR_CHARS],
        retry=retry,
        max_attempts=queue.fit_max_attempts,
    )
    logger.error(
        "fit.failed fit_id=%s study_id=%s attempt=%d status=%s error=%s",
        claim.fit_id,
        claim.study_id,
        claim.attempt,
        status,
        message[:500],
    )
    return status


def run_pending(
    factory: sessionmaker[Session],
    queue: FitQueueSettings,
    worker_id: str,
    *,
    stop_event: threading.Event | None = None,
    compute: Callable[[str], FitComputation] | None = None,
) -> int:
    """Re-queue stale fits, then run queued fits until none is left; return how many."""
    requeue_stale(
        factory,
        stale_seconds=queue.fit_stale_seconds,
        max_attempts=queue.fit_max_attempts,
    )
    ran = 0
    while stop_event is None or not stop_event.is_set():
        claim = claim_next(factory, worker_id)
        if claim is None:
            break
        run_claimed_fit(factory, claim, queue, compute)
        ran += 1
    return ran


def worker_loop(
    factory: sessionmaker[Session],
    queue: FitQueueSettings,
    stop_event: threading.Event,
    worker_id: str,
) -> None:
    """Run fits until ``stop_event`` is set, polling every ``fit_poll_seconds``.

    Errors of the loop itself (a database that went away) are logged and the
    loop carries on after a wait that grows with each failure in a row (see
    :class:`LoopBackoff`). A fit being computed when the event is set
    finishes first.
    """
    logger.info("fit.worker_started worker_id=%s", worker_id)
    backoff = LoopBackoff("fit.worker_loop", worker_id, queue.fit_poll_seconds)
    while not stop_event.is_set():
        try:
            run_pending(factory, queue, worker_id, stop_event=stop_event)
        except Exception as error:
            delay = backoff.failed(error)
        else:
            delay = backoff.succeeded()
        stop_event.wait(delay)
    logger.info("fit.worker_stopped worker_id=%s", worker_id)


def run_worker(settings: Any, stop_event: threading.Event) -> None:
    """Run the fit worker loop for ``settings`` until ``stop_event`` is set.

    ``settings`` is an :class:`app.settings.Settings`; its ``database_url``
    and ``sqlite_busy_timeout_ms`` choose the database, and fields of
    :class:`~app.jobs.config.FitQueueSettings` it has override the
    environment. This is the body of ``prefbudget worker``.
    """
    engine = create_db_engine(
        settings.database_url,
        sqlite_busy_timeout_ms=getattr(settings, "sqlite_busy_timeout_ms", 30_000),
        pool_size=getattr(settings, "db_pool_size", 10),
    )
    try:
        worker_loop(
            create_session_factory(engine),
            queue_settings(settings),
            stop_event,
            new_worker_id("worker"),
        )
    finally:
        engine.dispose()


class InProcessRunner:
    """Runs queued fits from a daemon thread of the API process.

    With ``fit_isolation = "process"`` and a ``database_url``, the fits
    compute in a child process at a lower priority (see
    :mod:`app.jobs.isolation`); otherwise in the runner thread. ``wake()``
    makes the thread look for work at once instead of after the next poll.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        queue: FitQueueSettings,
        *,
        database_url: str | None = None,
        sqlite_busy_timeout_ms: int = 30_000,
    ) -> None:
        self.worker_id = new_worker_id("api")
        self._factory = factory
        self._queue = queue
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._fit_process: FitProcess | None = None
        if queue.fit_isolation == "process" and database_url is not None:
            self._fit_process = FitProcess(
                ChildConfig(database_url, sqlite_busy_timeout_ms, queue.fit_nice)
            )
        self._thread = threading.Thread(
            target=self._run, name="prefbudget-fit-runner", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and the child process.

        A running fit gets about a third of ``timeout`` to finish; after that
        the child is terminated and the fit goes back to the queue.
        """
        self._stop.set()
        self._wake.set()
        if self._fit_process is not None:
            self._fit_process.stop(timeout / 3)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "fit.runner_stop_timeout worker_id=%s seconds=%s",
                self.worker_id,
                timeout,
            )

    def _run(self) -> None:
        logger.info(
            "fit.runner_started worker_id=%s isolation=%s",
            self.worker_id,
            "process" if self._fit_process is not None else "thread",
        )
        compute = self._fit_process.compute if self._fit_process is not None else None
        backoff = LoopBackoff(
            "fit.runner_loop", self.worker_id, self._queue.fit_poll_seconds
        )
        while not self._stop.is_set():
            self._wake.clear()
            try:
                run_pending(
                    self._factory,
                    self._queue,
                    self.worker_id,
                    stop_event=self._stop,
                    compute=compute,
                )
            except Exception as error:
                delay = backoff.failed(error)
            else:
                delay = backoff.succeeded()
            self._wake.wait(delay)
        logger.info("fit.runner_stopped worker_id=%s", self.worker_id)


def start_in_process_runner(
    factory: sessionmaker[Session], settings: Any = None
) -> InProcessRunner | None:
    """Start the in-process runner when ``run_fits_in_process`` is on, else None.

    ``settings`` (an :class:`app.settings.Settings`) supplies the database URL
    that the fit child process connects to, and may override queue settings.
    """
    queue = queue_settings(settings)
    if not queue.run_fits_in_process:
        logger.info("fit.runner_disabled reason=run_fits_in_process_false")
        return None
    runner = InProcessRunner(
        factory,
        queue,
        database_url=getattr(settings, "database_url", None),
        sqlite_busy_timeout_ms=getattr(settings, "sqlite_busy_timeout_ms", 30_000),
    )
    runner.start()
    return runner
