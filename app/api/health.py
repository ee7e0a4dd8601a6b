"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from app.db import migrations
from app.problems import ServiceUnavailable
from app.schemas.common import problem_responses

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Probe result."""

    status: str = Field(description="`ok` when the probe passed.", examples=["ok"])


class Readiness(Health):
    """Readiness probe result."""

    revision: list[str] = Field(description="Alembic revisions of the database.")


@router.get("/healthz", summary="Liveness probe", response_model=Health)
def healthz() -> Health:
    """Return ok while the process is able to serve requests."""
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness probe",
    response_model=Readiness,
    responses=problem_responses(503),
)
def readyz(request: Request) -> Readiness:
    """Check that the database is reachable and its schema is at the head revision."""
    engine = request.app.state.engine
    try:
        current = migrations.current_revisions(engine)
    except SQLAlchemyError as exc:
        logger.warning("readyz.database_unreachable error=%s", exc.__class__.__name__)
        raise ServiceUnavailable("the database is unreachable") from exc
    heads = migrations.head_revisions()
    if current != heads:
        raise ServiceUnavailable(
            f"the database schema is at revision {sorted(current) or 'none'}, "
            f"expected {sorted(heads)}; run `prefbudget db upgrade`"
        )
    return Readiness(status="ok", revision=sorted(current))
