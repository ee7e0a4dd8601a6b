"""Study endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from app.api.deps import SessionDep, StudyIdPath
from app.schemas.common import problem_responses
from app.schemas.studies import StudyCreate, StudyOut, StudyPage
from app.services import studies as study_service

router = APIRouter(prefix="/v1/studies", tags=["studies"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyOut,
    summary="Create a study",
    responses=problem_responses(413, 422),
)
def create_study(body: StudyCreate, session: SessionDep) -> StudyOut:
    """Create a study. A given `relevance` runs Algorithm 1; null runs Algorithm 2."""
    study = study_service.create_study(session, body)
    return study_service.render_study(session, study)


@router.get(
    "",
    response_model=StudyPage,
    summary="List studies",
    responses=problem_responses(400, 422),
)
def list_studies(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Studies per page.")] = 100,
    cursor: Annotated[
        str | None, Query(description="`next_cursor` of the previous page.")
    ] = None,
) -> StudyPage:
    """List studies, newest first."""
    return study_service.list_studies(session, limit=limit, cursor=cursor)


@router.get(
    "/{study_id}",
    response_model=StudyOut,
    summary="Get a study",
    responses=problem_responses(404),
)
def get_study(study_id: StudyIdPath, session: SessionDep) -> StudyOut:
    """Return a study with its tasks, label counts and latest fit."""
    study = study_service.require_study(session, study_id)
    return study_service.render_study(session, study)
