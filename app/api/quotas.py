"""Quota endpoint: which tasks to label next."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import SessionDep, StudyIdPath
from app.schemas.common import problem_responses
from app.schemas.quotas import QuotasOut, TaskQuotaOut
from app.services.quotas import quota_report
from app.services.studies import require_study

router = APIRouter(prefix="/v1/studies/{study_id}", tags=["quotas"])


@router.get(
    "/quotas",
    response_model=QuotasOut,
    summary="Get the label quotas of the current phase",
    responses=problem_responses(404, 422),
)
def get_quotas(
    study_id: StudyIdPath,
    session: SessionDep,
    batch: Annotated[
        int | None,
        Query(
            ge=0,
            le=1_000_000_000,
            description="Split this many next labels over the tasks that need them.",
        ),
    ] = None,
) -> QuotasOut:
    """Return planned, collected and remaining labels per task in the current phase.

    Source quotas follow Active-Sample: half of the phase's source budget in
    proportion to the task relevance (the prior in the pilot phase, the pilot
    estimate in the main phase, the given relevance for Algorithm 1), half
    uniform. Pilot labels do not count towards main-phase quotas.
    """
    study = require_study(session, study_id)
    report = quota_report(session, study, batch=batch)
    return QuotasOut(
        study_id=study.id,
        phase=report.phase,
        fit_id=report.fit_id,
        tasks=[
            TaskQuotaOut(
                task=task.task,
                role=task.role,
                collected=task.collected,
                planned=task.planned,
                remaining=task.remaining,
            )
            for task in report.tasks
        ],
        next_batch=report.next_batch,
        quotas_met=report.met,
    )
