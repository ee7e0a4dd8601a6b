"""Fit endpoints: queue a fit, read its status, list fits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request, status

from app.api.deps import SessionDep
from app.db.models import Fit
from app.schemas.common import problem_responses
from app.schemas.fits import FitOut, FitPage
from app.services import fits as fit_service
from app.services.studies import require_study

router = APIRouter(prefix="/v1/studies/{study_id}/fits", tags=["fits"])


def as_utc(value: datetime | None) -> datetime | None:
    """Attach UTC to a naive datetime (SQLite returns stored UTC times without zone)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def render_fit(fit: Fit) -> FitOut:
    """Build the API view of a fit."""
    return FitOut(
        id=fit.id,
        study_id=fit.study_id,
        status=fit.status,
        phase=fit.phase,
        trigger=fit.trigger,
        created_at=as_utc(fit.created_at),
        started_at=as_utc(fit.started_at),
        finished_at=as_utc(fit.finished_at),
        heartbeat_at=as_utc(fit.heartbeat_at),
        attempts=fit.attempts or 0,
        worker_id=fit.worker_id,
        labels=fit.labels or {},
        relevance=fit.relevance,
        rank=fit.rank,
        confidence_radius=fit.confidence_radius,
        diagnostics=fit.diagnostics,
        error=fit.error,
    )


def _wake_runner(request: Request) -> None:
    runner = getattr(request.app.state, "fit_runner", None)
    if runner is not None:
        runner.wake()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=FitOut,
    summary="Queue a fit",
    responses=problem_responses(404),
)
def create_fit(
    study_id: str, session: SessionDep, request: Request, background: BackgroundTasks
) -> FitOut:
    """Queue a fit of the study's current phase on all labels stored so far.

    The fit runs outside the request; poll `GET /fits/{fit_id}`. When its
    labels meet every quota of the current phase, its success moves the study
    to the next phase, as the automatic fit would.
    """
    study = require_study(session, study_id)
    fit = fit_service.queue_fit(session, study, trigger="manual")
    # Background tasks run after the response, so after the commit.
    background.add_task(_wake_runner, request)
    return render_fit(fit)


@router.get(
    "",
    response_model=FitPage,
    summary="List fits",
    responses=problem_responses(404, 422),
)
def list_fits(
    study_id: str,
    session: SessionDep,
    limit: Annotated[
        int, Query(ge=1, le=1000, description="Most fits returned.")
    ] = 100,
    status_filter: Annotated[
        Literal["queued", "running", "succeeded", "failed"] | None,
        Query(alias="status", description="Only fits with this status."),
    ] = None,
) -> FitPage:
    """List the study's fits, newest first."""
    require_study(session, study_id)
    fits = fit_service.list_fits(session, study_id, limit=limit, status=status_filter)
    return FitPage(items=[render_fit(fit) for fit in fits])


@router.get(
    "/{fit_id}",
    response_model=FitOut,
    summary="Get a fit",
    responses=problem_responses(404),
)
def get_fit(study_id: str, fit_id: str, session: SessionDep) -> FitOut:
    """Return a fit's status, timestamps, labels used, relevance and diagnostics."""
    require_study(session, study_id)
    return render_fit(fit_service.get_fit(session, study_id, fit_id))
