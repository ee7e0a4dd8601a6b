"""Model endpoint: the latest good fit's estimate."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import SessionDep, StudyIdPath
from app.db.models import Fit
from app.schemas.common import problem_responses
from app.schemas.fits import ModelOut
from app.services.policy import load_latest_model
from app.services.quotas import source_tasks
from app.services.studies import require_study

router = APIRouter(prefix="/v1/studies/{study_id}", tags=["fits"])


@router.get(
    "/model",
    response_model=ModelOut,
    summary="Get the latest model",
    responses=problem_responses(
        404,
        descriptions={404: "The study does not exist, or it has no succeeded fit yet."},
    ),
)
def get_model(study_id: StudyIdPath, session: SessionDep) -> ModelOut:
    """Return the latest succeeded fit's target estimate, relevance and basis.

    A failed fit leaves the previous model in place. 404 until a fit succeeds.
    """
    study = require_study(session, study_id)
    model = load_latest_model(session, study)
    finished_at = session.get(Fit, model.fit_id).finished_at
    names = [task.name for task in source_tasks(study)]
    return ModelOut(
        study_id=study.id,
        fit_id=model.fit_id,
        phase=model.phase,
        finished_at=finished_at,
        theta=model.theta.tolist(),
        relevance=model.relevance,
        basis=model.basis.T.tolist(),
        rank=model.rank,
        confidence_radius=model.confidence_radius,
        source_thetas={
            name: model.source_thetas[:, column].tolist()
            for column, name in enumerate(names)
        },
    )
