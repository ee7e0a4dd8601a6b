"""Fit endpoints: queue a fit, read its status, list fits."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Body, Query, Request, status

from app.api.deps import FitIdPath, SessionDep, StudyIdPath
from app.db.models import Fit
from app.schemas.common import problem_responses
from app.schemas.fits import FitCreate, FitOut, FitPage
from app.services import fits as fit_service
from app.services.studies import require_study

router = APIRouter(prefix="/v1/studies/{study_id}/fits", tags=["fits"])

FIT_NOT_FOUND = {404: "The study or fit does not exist."}


def render_fit(fit: Fit) -> FitOut:
    """Build the API view of a fit."""
    return FitOut(
        id=fit.id,
        study_id=fit.study_id,
        status=fit.status,
        phase=fit.phase,
        trigger=fit.trigger,
        created_at=fit.created_at,
        started_at=fit.started_at,
        finished_at=fit.finished_at,
        heartbeat_at=fit.heartbeat_at,
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
    responses=problem_responses(
        404,
        409,
        422,
        descriptions={
            409: (
                "A fit of the study is already queued or running; `fit_id` names it."
            ),
            422: (
                "The body is invalid, or a task the fit needs has no labels; "
                "`errors` names each such task."
            ),
        },
    ),
)
def create_fit(
    study_id: StudyIdPath,
    session: SessionDep,
    request: Request,
    background: BackgroundTasks,
    body: Annotated[
        FitCreate | None,
        Body(description="Fit options: an empty object, or no body at all."),
    ] = None,
) -> FitOut:
    """Queue a fit of the study's current phase on all labels stored so far.

    The fit runs outside the request; poll `GET /fits/{fit_id}`. When its
    labels meet every quota of the current phase, its success moves the study
    to the next phase, as the automatic fit would. Only one fit per study is
    queued or running at a time (409 otherwise), and every task the fit needs
    must have labels (422 otherwise).
    """
    study = require_study(session, study_id, for_update=True)
    fit = fit_service.queue_manual_fit(session, study)
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
    study_id: StudyIdPath,
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
    responses=problem_responses(404, descriptions=FIT_NOT_FOUND),
)
def get_fit(study_id: StudyIdPath, fit_id: FitIdPath, session: SessionDep) -> FitOut:
    """Return a fit's status, timestamps, labels used, relevance and diagnostics."""
    require_study(session, study_id)
    return render_fit(fit_service.get_fit(session, study_id, fit_id))
