"""Creating, loading and listing studies."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from app.db import queries
from app.db.models import Study, Task, utcnow
from app.problems import BadRequest, FieldError, StudyNotFound, ValidationProblem
from app.schemas.studies import (
    Budget,
    FitSummary,
    StudyCreate,
    StudyOut,
    StudyPage,
    TaskOut,
)

logger = logging.getLogger(__name__)

# Study settings handled by the service itself rather than by the solver.
SERVICE_SETTING_KEYS = frozenset({"strict_phase_split"})


class KnownSettings(BaseModel):
    """Types and ranges of the setting overrides that the service knows.

    Used for every key it lists; when ``solvers.algorithms.SolverSettings`` is
    importable, its fields decide which solver keys exist and its constructor
    checks the values as well.
    """

    model_config = ConfigDict(extra="allow")

    strict_phase_split: bool | None = None
    ridge_scale: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    lasso_penalty: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    ellipsoid_radius: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    confidence_level: float | None = Field(default=None, gt=0, lt=1)
    confidence_radius: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    rank_candidates: list[int] | None = Field(default=None, min_length=1)
    tol: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_iter: int | None = Field(default=None, ge=1)


def _solver_settings_class() -> type | None:
    try:
        from solvers.algorithms import SolverSettings
    except ImportError:
        return None
    return SolverSettings


def validate_settings(raw: dict[str, Any]) -> list[FieldError]:
    """Check setting overrides: known keys, types and ranges."""
    errors: list[FieldError] = []
    solver_class = _solver_settings_class()
    if solver_class is not None:
        solver_keys = {field.name for field in dataclasses.fields(solver_class)}
    else:
        solver_keys = set(KnownSettings.model_fields) - SERVICE_SETTING_KEYS
    known = solver_keys | SERVICE_SETTING_KEYS

    for key in raw:
        if key not in known:
            errors.append(
                FieldError(
                    None,
                    f"settings.{key}",
                    f"unknown setting; known settings: {', '.join(sorted(known))}",
                )
            )
    try:
        KnownSettings.model_validate({k: v for k, v in raw.items() if k in known})
    except ValidationError as exc:
        for error in exc.errors():
            path = ".".join(str(part) for part in error["loc"])
            errors.append(FieldError(None, f"settings.{path}", error["msg"]))
    if errors or solver_class is None:
        return errors

    solver_overrides = {k: v for k, v in raw.items() if k in solver_keys}
    if "rank_candidates" in solver_overrides:
        solver_overrides["rank_candidates"] = tuple(solver_overrides["rank_candidates"])
    try:
        solver_class(**solver_overrides)
    except (TypeError, ValueError) as exc:
        errors.append(FieldError(None, "settings", str(exc)))
    return errors


def _check_task_weights(
    name: str, weights: dict[str, float], sources: list[str]
) -> list[FieldError]:
    errors: list[FieldError] = []
    for key in weights:
        if key not in sources:
            errors.append(
                FieldError(None, f"{name}.{key}", "not a source task of the study")
            )
    for source in sources:
        if source not in weights:
            errors.append(
                FieldError(None, f"{name}.{source}", "missing weight for source task")
            )
    for key, value in weights.items():
        if not math.isfinite(value):
            errors.append(FieldError(None, f"{name}.{key}", "must be a finite number"))
    return errors


def check_study_create(body: StudyCreate) -> list[FieldError]:
    """Check the cross-field rules of a new study; return every violation."""
    errors: list[FieldError] = []
    sources = body.source_tasks

    seen: set[str] = set()
    for position, source in enumerate(sources):
        if source in seen:
            errors.append(
                FieldError(
                    None, f"source_tasks.{position}", f"duplicate task '{source}'"
                )
            )
        seen.add(source)
    if body.target_task in seen:
        errors.append(
            FieldError(
                None,
                "target_task",
                f"task '{body.target_task}' is also a source task",
            )
        )

    max_rank = min(body.dimension, len(sources))
    if body.rank is not None and not 1 <= body.rank <= max_rank:
        errors.append(
            FieldError(
                None,
                "rank",
                f"must be null or between 1 and min(dimension, number of source "
                f"tasks) = {max_rank}, got {body.rank}",
            )
        )

    if body.relevance is not None:
        errors.extend(_check_task_weights("relevance", body.relevance, sources))
        if body.prior is not None:
            errors.append(
                FieldError(
                    None,
                    "prior",
                    "a prior is used only by the pilot phase; give null when "
                    "relevance is given",
                )
            )
    else:
        if body.prior is not None:
            errors.extend(_check_task_weights("prior", body.prior, sources))
            for key, value in body.prior.items():
                if value < 0:
                    errors.append(
                        FieldError(None, f"prior.{key}", "must be non-negative")
                    )
            if all(value <= 0 for value in body.prior.values()):
                errors.append(
                    FieldError(None, "prior", "at least one weight must be positive")
                )
        for key in ("pilot_source", "pilot_target"):
            if getattr(body.budget, key) is None:
                errors.append(
                    FieldError(
                        None,
                        f"budget.{key}",
                        "required when relevance is null (pilot phase)",
                    )
                )

    errors.extend(validate_settings(body.settings))
    return errors


def create_study(session: Session, body: StudyCreate) -> Study:
    """Validate and store a new study with its tasks; raise 422 on bad input."""
    errors = check_study_create(body)
    if errors:
        raise ValidationProblem("the study definition is invalid", errors)

    algorithm = "known_relevance" if body.relevance is not None else "active"
    now = utcnow()
    study = Study(
        name=body.name,
        dimension=body.dimension,
        rank=body.rank,
        algorithm=algorithm,
        phase="main" if algorithm == "known_relevance" else "pilot",
        relevance=body.relevance,
        prior=body.prior,
        budget=body.budget.model_dump(),
        settings=body.settings,
        created_at=now,
        updated_at=now,
    )
    study.tasks = [
        Task(name=name, role="source", position=position)
        for position, name in enumerate(body.source_tasks)
    ]
    study.tasks.append(
        Task(name=body.target_task, role="target", position=len(body.source_tasks))
    )
    session.add(study)
    session.flush()
    logger.info(
        "study.created study_id=%s algorithm=%s dimension=%d sources=%d",
        study.id,
        algorithm,
        study.dimension,
        len(body.source_tasks),
    )
    return study


def require_study(
    session: Session, study_id: str, *, for_update: bool = False
) -> Study:
    """Load a study or raise :class:`StudyNotFound` (404)."""
    study = queries.get_study(session, study_id, for_update=for_update)
    if study is None:
        raise StudyNotFound(study_id)
    return study


def _fit_summary(fit: Any) -> FitSummary | None:
    if fit is None:
        return None
    return FitSummary(
        id=fit.id,
        status=fit.status,
        phase=fit.phase,
        created_at=fit.created_at,
        finished_at=fit.finished_at,
    )


def render_studies(session: Session, studies: list[Study]) -> list[StudyOut]:
    """Build the API view of studies, with label counts and latest fits."""
    ids = [study.id for study in studies]
    counts = queries.label_counts(session, ids)
    fits = queries.latest_fits(session, ids)
    return [
        StudyOut(
            id=study.id,
            name=study.name,
            dimension=study.dimension,
            rank=study.rank,
            algorithm=study.algorithm,
            phase=study.phase,
            tasks=[
                TaskOut(name=task.name, role=task.role, labels=counts.get(task.id, 0))
                for task in study.tasks
            ],
            relevance=study.relevance,
            prior=study.prior,
            budget=Budget.model_validate(study.budget),
            settings=study.settings,
            latest_fit=_fit_summary(fits.get(study.id)),
            created_at=study.created_at,
            updated_at=study.updated_at,
        )
        for study in studies
    ]


def render_study(session: Session, study: Study) -> StudyOut:
    """Build the API view of one study."""
    return render_studies(session, [study])[0]


def _encode_study_cursor(created_at: datetime, study_id: str) -> str:
    raw = f"{created_at.isoformat()}|{study_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_study_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, study_id = base64.urlsafe_b64decode(padded).decode().split("|", 1)
        return datetime.fromisoformat(stamp), study_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid cursor '{cursor}'") from exc


def list_studies(session: Session, *, limit: int, cursor: str | None) -> StudyPage:
    """Return one page of studies, newest first."""
    statement = select(Study).order_by(Study.created_at.desc(), Study.id.desc())
    if cursor is not None:
        created_at, study_id = _decode_study_cursor(cursor)
        statement = statement.where(
            tuple_(Study.created_at, Study.id) < tuple_(created_at, study_id)
        )
    studies = list(session.scalars(statement.limit(limit + 1)))
    next_cursor = None
    if len(studies) > limit:
        studies = studies[:limit]
        last = studies[-1]
        next_cursor = _encode_study_cursor(last.created_at, last.id)
    return StudyPage(items=render_studies(session, studies), next_cursor=next_cursor)
