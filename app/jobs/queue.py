"""The fit queue: claiming, heartbeats and re-queueing of fit jobs.

A fit row is its own job. Its life: ``queued`` -> ``running`` (claimed by one
worker, ``attempts`` + 1) -> ``succeeded`` or ``failed``. A running fit whose
heartbeat is older than the stale timeout goes back to ``queued``, or to
``failed`` once it has used its attempts.

Every function here runs one short transaction of its own and commits it, so
no lock is held while a solver computes.

Claiming: on PostgreSQL the oldest queued row is locked with
``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent workers each get a
different row without waiting. On SQLite the claim is an
``UPDATE ... WHERE id = :id AND status = 'queued'`` inside a ``BEGIN
IMMEDIATE`` transaction: only one claimer's update matches the row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.engine import open_session
from app.db.models import Fit, utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A fit claimed by a worker: the fit, the study, and the attempt number.

    ``attempt`` equals the fit's ``attempts`` column right after the claim.
    Every later write of this worker checks it, so a worker whose fit was
    re-queued and claimed again elsewhere cannot overwrite the newer attempt.
    """

    fit_id: str
    study_id: str
    worker_id: str
    attempt: int


@contextmanager
def transaction(factory: sessionmaker[Session], *, write: bool) -> Iterator[Session]:
    """Open a session, commit it when the block succeeds, roll back otherwise."""
    session = open_session(factory, write=write)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def claim_next(factory: sessionmaker[Session], worker_id: str) -> Claim | None:
    """Claim the oldest queued fit; return None when the queue is empty."""
    with transaction(factory, write=True) as session:
        oldest = (
            select(Fit)
            .where(Fit.status == "queued")
            .order_by(Fit.created_at, Fit.id)
            .limit(1)
        )
        now = utcnow()
        if _is_postgresql(session):
            fit = session.scalars(oldest.with_for_update(skip_locked=True)).first()
            if fit is None:
                return None
            fit.status = "running"
            fit.attempts = (fit.attempts or 0) + 1
            fit.worker_id = worker_id
            fit.started_at = now
            fit.heartbeat_at = now
            claim = Claim(fit.id, fit.study_id, worker_id, fit.attempts)
        else:
            fit = session.scalars(oldest).first()
            if fit is None:
                return None
            result = session.execute(
                update(Fit)
                .where(Fit.id == fit.id, Fit.status == "queued")
                .values(
                    status="running",
                    attempts=Fit.attempts + 1,
                    worker_id=worker_id,
                    started_at=now,
                    heartbeat_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return None
            attempts = session.scalar(select(Fit.attempts).where(Fit.id == fit.id))
            claim = Claim(fit.id, fit.study_id, worker_id, int(attempts))
    logger.info(
        "fit.claimed fit_id=%s study_id=%s worker_id=%s attempt=%d",
        claim.fit_id,
        claim.study_id,
        worker_id,
        claim.attempt,
    )
    return claim


def owns(claim: Claim):
    """Return the SQL condition that the fit is still running under ``claim``."""
    return (
        (Fit.id == claim.fit_id)
        & (Fit.status == "running")
        & (Fit.worker_id == claim.worker_id)
        & (Fit.attempts == claim.attempt)
    )


def heartbeat(factory: sessionmaker[Session], claim: Claim) -> bool:
    """Refresh the heartbeat of a claimed fit.

    Returns False when the fit no longer runs under ``claim`` (it was
    re-queued as stale, or finished), so the caller can stop early.
    """
    with transaction(factory, write=True) as session:
        result = session.execute(
            update(Fit)
            .where(owns(claim))
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1


def release(
    factory: sessionmaker[Session],
    claim: Claim,
    error: str,
    *,
    retry: bool,
    max_attempts: int,
) -> str | None:
    """Record an error of a claimed fit: queue it again or mark it failed.

    The fit is queued again when ``retry`` is true and it has attempts left;
    otherwise it fails with ``error``. Returns the new status, or None when
    the fit no longer ran under ``claim``.
    """
    now = utcnow()
    requeue = retry and claim.attempt < max_attempts
    values: dict[str, object] = {"error": error}
    if requeue:
        values.update(
            status="queued", worker_id=None, heartbeat_at=None, started_at=None
        )
    else:
        values.update(status="failed", finished_at=now, heartbeat_at=now)
    with transaction(factory, write=True) as session:
        result = session.execute(
            update(Fit)
            .where(owns(claim))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return None
    return str(values["status"])


def requeue_stale(
    factory: sessionmaker[Session], *, stale_seconds: float, max_attempts: int
) -> list[str]:
    """Queue again the running fits whose heartbeat is older than ``stale_seconds``.

    A stale fit that has already used ``max_attempts`` attempts is marked
    failed instead, with an error naming the worker that stopped. Returns the
    ids of the fits that changed.
    """
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    changed: list[str] = []
    with transaction(factory, write=True) as session:
        statement = select(Fit).where(
            Fit.status == "running", Fit.heartbeat_at < cutoff
        )
        if _is_postgresql(session):
            statement = statement.with_for_update(skip_locked=True)
        for fit in session.scalars(statement):
            message = (
                f"worker '{fit.worker_id}' stopped sending heartbeats during "
                f"attempt {fit.attempts}"
            )
            if fit.attempts >= max_attempts:
                fit.status = "failed"
                fit.error = f"{message}; gave up after {fit.attempts} attempt(s)"
                fit.finished_at = utcnow()
                logger.error(
                    "fit.abandoned fit_id=%s study_id=%s worker_id=%s attempts=%d",
                    fit.id,
                    fit.study_id,
                    fit.worker_id,
                    fit.attempts,
                )
            else:
                fit.status = "queued"
                fit.error = message
                logger.warning(
                    "fit.requeued fit_id=%s study_id=%s worker_id=%s attempts=%d",
                    fit.id,
                    fit.study_id,
                    fit.worker_id,
                    fit.attempts,
                )
                fit.worker_id = None
                fit.heartbeat_at = None
                fit.started_at = None
            changed.append(fit.id)
    return changed
