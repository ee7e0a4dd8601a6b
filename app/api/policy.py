"""Policy endpoint: choose responses with the latest good model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from app.api.deps import StudyIdPath
from app.db.engine import open_session
from app.schemas.common import problem_responses
from app.schemas.policy import PolicyOut, PolicyRequest
from app.services.policy import decide
from app.services.studies import require_study

router = APIRouter(prefix="/v1/studies/{study_id}", tags=["policy"])


def get_read_session(request: Request) -> Iterator[Session]:
    """Yield a read-only session although the method is POST.

    The policy writes nothing, so it must not take SQLite's write lock and
    wait behind ingest requests.
    """
    session = open_session(request.app.state.session_factory, write=False)
    try:
        yield session
    finally:
        session.rollback()
        session.close()


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


@router.post(
    "/policy",
    response_model=PolicyOut,
    summary="Choose an action per context",
    responses=problem_responses(
        404,
        422,
        descriptions={404: "The study does not exist, or it has no succeeded fit yet."},
    ),
)
def choose(
    study_id: StudyIdPath, body: PolicyRequest, session: ReadSessionDep
) -> PolicyOut:
    """Choose one action per context with the latest succeeded fit.

    `errors[].index` of a 422 names the context; `field` names the action
    (`actions.3`) or `reference`. 404 when the study has no succeeded fit.
    """
    study = require_study(session, study_id)
    return decide(session, study, body)
