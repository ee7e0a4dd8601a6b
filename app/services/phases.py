"""Phase rules: queue a fit when a phase's quotas are met, move on when it succeeds.

Algorithm 2 runs ``pilot -> main -> complete`` and Algorithm 1 runs
``main -> complete``. New labels are stored with the study's current phase.

- After every ingest that stores labels (:func:`on_labels_stored`, called in
  the ingest transaction while the study row is locked), the service checks
  the quotas of the current phase. When all are met and no automatic fit of
  that phase is queued or running, it queues one (trigger ``auto``).
- When a fit succeeds whose labels meet every quota of the study's current
  phase (:func:`advance_phase`), the study moves to the next phase. Every
  automatic fit qualifies, and so does a manual fit posted after a failed
  automatic one, so a failure never leaves a study stuck.
- A failed fit changes no phase. The next ingest queues a new automatic fit,
  as does ``POST /fits``.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Fit, Study, utcnow
from app.services.fits import queue_fit
from app.services.quotas import quota_report

logger = logging.getLogger(__name__)

NEXT_PHASE = {"pilot": "main", "main": "complete"}


def pending_auto_fit(session: Session, study_id: str, phase: str) -> str | None:
    """Return the id of a queued or running automatic fit of ``phase``, if any."""
    statement = (
        select(Fit.id)
        .where(
            Fit.study_id == study_id,
            Fit.phase == phase,
            Fit.trigger == "auto",
            Fit.status.in_(("queued", "running")),
        )
        .limit(1)
    )
    return session.scalar(statement)


def queue_fit_if_quotas_met(session: Session, study: Study) -> Fit | None:
    """Queue an automatic fit when every quota of the current phase is met.

    The caller must hold the study row lock (or SQLite's write lock), so two
    concurrent requests cannot both queue a fit for the same phase.
    """
    if study.phase not in NEXT_PHASE:
        return None
    if not quota_report(session, study).met:
        return None
    if pending_auto_fit(session, study.id, study.phase) is not None:
        return None
    return queue_fit(session, study, trigger="auto")


def on_labels_stored(session: Session, study: Study) -> Fit | None:
    """Run the phase rules after an ingest; return the fit it queued, if any."""
    return queue_fit_if_quotas_met(session, study)


def advance_phase(session: Session, study: Study, fit: Fit) -> str | None:
    """Move the study past ``fit.phase`` when it is still in that phase.

    The caller has checked that the fit's labels meet the phase's quotas and
    holds the study row lock. Returns the new phase, or None when the study
    had already moved on (another fit of the same phase finished first).
    """
    if study.phase != fit.phase or fit.phase not in NEXT_PHASE:
        return None
    previous = study.phase
    study.phase = NEXT_PHASE[previous]
    study.updated_at = utcnow()
    session.flush()
    logger.info(
        "study.phase_moved study_id=%s fit_id=%s from=%s to=%s",
        study.id,
        fit.id,
        previous,
        study.phase,
    )
    # A phase whose quotas are already met (a zero budget) gets its fit now,
    # because no ingest will come to trigger it.
    queue_fit_if_quotas_met(session, study)
    return study.phase
