"""Creating, loading and listing studies."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from app.db import queries
from app.db.models import Study, Task, utcnow
from app.problems import BadRequest, FieldError, StudyNotFound, ValidationProblem
from app.schemas.common import is_resource_id
from app.schemas.studies import (
    SERVICE_SETTINGS,
    Budget,
    FitSummary,
    StudyCreate,
    StudyOut,
    StudyPage,
    TaskOut,
)
from solvers.algorithms import SolverSettings, rank_candidates
from solvers.allocation import active_sample
from solvers.errors import InvalidInputError

logger = logging.getLogger(__name__)


def _setting_error(key: str, reason: str) -> FieldError:
    return FieldError(None, f"settings.{key}", reason)


def validate_settings(raw: dict[str, Any]) -> list[FieldError]:
    """Check setting overrides key by key: known keys and value types and ranges.

    Solver keys are checked by :meth:`SolverSettings.from_mapping`, one key at a
    time so that each error names its key, then all together. Study keys
    (:data:`SERVICE_SETTINGS`) are checked against their type; a boolean
    setting takes only ``true`` or ``false``.
    """
    errors: list[FieldError] = []
    solver_keys = [field.name for field in dataclasses.fields(SolverSettings)]
    known = sorted([*solver_keys, *SERVICE_SETTINGS])

    for key, value in raw.items():
        if key in SERVICE_SETTINGS:
            kind, _ = SERVICE_SETTINGS[key]
            if type(value) is not kind:
                errors.append(
                    _setting_error(
                        key, f"must be a {kind.__name__}, got {json.dumps(value)}"
                    )
                )
        elif key in solver_keys:
            try:
                SolverSettings.from_mapping({key: value})
            except (InvalidInputError, TypeError) as exc:
                errors.append(_setting_error(key, str(exc)))
        else:
            errors.append(
                _setting_error(
                    key, f"unknown setting; known settings: {', '.join(known)}"
                )
            )
    if errors:
        return errors

    solver_overrides = {k: v for k, v in raw.items() if k in solver_keys}
    try:
        SolverSettings.from_mapping(solver_overrides)
    except (InvalidInputError, TypeError) as exc:
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


def _weights_in_order(
    weights: dict[str, float] | None, names: Sequence[str]
) -> list[float]:
    if weights is None:
        return [0.0] * len(names)
    return [float(weights.get(name, 0.0)) for name in names]


def _split_sources(total: int, weights: Sequence[float]) -> np.ndarray:
    # The same call as the quota plan, so the check matches the quotas served.
    with np.errstate(over="ignore"):
        return active_sample(total, weights)


def _smallest_source_budget(weights: Sequence[float]) -> int:
    """Return the smallest budget from which Active-Sample gives every task a label.

    From ``2 M`` labels on, the uniform half alone gives each of the M tasks
    at least one label. Below that, largest-remainder rounding is not
    monotone in the total, so the scan goes down from ``2 M`` and stops at the
    first total that leaves a task without labels.
    """
    total = 2 * len(weights)
    while total > 1 and np.all(_split_sources(total - 1, weights) >= 1):
        total -= 1
    return total


def _check_source_split(
    field: str,
    total: int,
    weights: dict[str, float] | None,
    sources: Sequence[str],
    weight_name: str,
) -> list[FieldError]:
    """Check that the Active-Sample split of ``total`` gives every source a label."""
    vector = _weights_in_order(weights, sources)
    counts = _split_sources(total, vector)
    empty = [name for name, count in zip(sources, counts, strict=True) if count < 1]
    if not empty:
        return []
    minimum = _smallest_source_budget(vector)
    names = ", ".join(f"'{name}'" for name in empty)
    return [
        FieldError(
            None,
            field,
            f"{total} labels split by Active-Sample with the {weight_name} give "
            f"no label to source task(s) {names}, so the phase could never be "
            f"fitted; give at least {minimum}",
        )
    ]


def _check_known_relevance_budget(
    body: StudyCreate, weight_errors: list[FieldError]
) -> list[FieldError]:
    """Check the budget of Algorithm 1: source labels only, one per task at least."""
    errors: list[FieldError] = []
    budget = body.budget
    if budget.target > 0:
        errors.append(
            FieldError(
                None,
                "budget.target",
                "Algorithm 1 (relevance given) uses no target labels: its target "
                "estimate is the relevance-weighted sum of the source estimates; "
                "give 0 or leave `target` out",
            )
        )
    for key in ("pilot_source", "pilot_target"):
        if (getattr(budget, key) or 0) > 0:
            errors.append(
                FieldError(
                    None,
                    f"budget.{key}",
                    "Algorithm 1 (relevance given) has no pilot phase; give null or 0",
                )
            )
    if not weight_errors:
        errors.extend(
            _check_source_split(
                "budget.source",
                budget.source,
                body.relevance,
                body.source_tasks,
                "given relevance",
            )
        )
    return errors


def _check_active_budget(
    body: StudyCreate, weight_errors: list[FieldError]
) -> list[FieldError]:
    """Check the budgets of Algorithm 2 so that both phases can be fitted.

    The pilot plan is known at creation (Active-Sample with the prior). The
    main-phase relevance is estimated later, so the main source budget must
    be at least ``2 M``: then the uniform half of Active-Sample gives every
    task a label whatever the estimate.
    """
    errors: list[FieldError] = []
    budget = body.budget
    for key in ("pilot_source", "pilot_target"):
        if getattr(budget, key) is None:
            errors.append(
                FieldError(
                    None,
                    f"budget.{key}",
                    "required when relevance is null (pilot phase)",
                )
            )
    if budget.pilot_target is not None and budget.pilot_target < 1:
        errors.append(
            FieldError(
                None,
                "budget.pilot_target",
                "must be at least 1: the pilot fit estimates the target from its "
                "pilot labels",
            )
        )
    if budget.target < 1:
        errors.append(
            FieldError(
                None,
                "budget.target",
                "must be at least 1 for Algorithm 2: the main fit estimates the "
                "target from its main-phase labels",
            )
        )
    minimum_source = 2 * len(body.source_tasks)
    if budget.source < minimum_source:
        errors.append(
            FieldError(
                None,
                "budget.source",
                f"must be at least {minimum_source} (2 per source task): half of "
                "the main-phase source budget is split uniformly and the other "
                "half by the relevance that the pilot fit estimates later, so only "
                "2 per task guarantees every task a label",
            )
        )
    if budget.pilot_source is not None and not weight_errors:
        weight_name = "prior" if body.prior is not None else "uniform prior"
        errors.extend(
            _check_source_split(
                "budget.pilot_source",
                budget.pilot_source,
                body.prior,
                body.source_tasks,
                weight_name,
            )
        )
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
        weight_errors = _check_task_weights("relevance", body.relevance, sources)
        errors.extend(weight_errors)
        if body.prior is not None:
            errors.append(
                FieldError(
                    None,
                    "prior",
                    "a prior is used only by the pilot phase; give null when "
                    "relevance is given",
                )
            )
        errors.extend(_check_known_relevance_budget(body, weight_errors))
    else:
        weight_errors = []
        if body.prior is not None:
            weight_errors = _check_task_weights("prior", body.prior, sources)
            for key, value in body.prior.items():
                if value < 0:
                    weight_errors.append(
                        FieldError(None, f"prior.{key}", "must be non-negative")
                    )
            if all(value <= 0 for value in body.prior.values()):
                weight_errors.append(
                    FieldError(None, "prior", "at least one weight must be positive")
                )
            errors.extend(weight_errors)
        errors.extend(_check_active_budget(body, weight_errors))

    settings_errors = validate_settings(body.settings)
    errors.extend(settings_errors)
    if body.rank is None and not settings_errors and len(sources) > 0:
        errors.extend(_check_rank_candidates(body))
    return errors


def _check_rank_candidates(body: StudyCreate) -> list[FieldError]:
    """Check ``settings.rank_candidates`` with the rule the solver applies.

    The solver tries these ranks only when the study has no fixed rank, and
    ``max_rank`` only caps the default candidates, so it cannot make a fit fail.
    """
    overrides = {
        key: value
        for key, value in body.settings.items()
        if key not in SERVICE_SETTINGS
    }
    settings = SolverSettings.from_mapping(overrides)
    try:
        # The solver's own rule, so the creation check cannot drift from it.
        rank_candidates(settings, body.dimension, len(body.source_tasks))
    except InvalidInputError as exc:
        return [FieldError(None, "settings.rank_candidates", str(exc))]
    return []


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
    """Load a study or raise :class:`StudyNotFound` (404).

    An id that is not UUID-shaped gets 404 without a query, because some ids
    cannot be sent to the database (PostgreSQL raises an error on a NUL
    character).
    """
    if not is_resource_id(study_id):
        raise StudyNotFound(study_id)
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
            # Stored budgets passed validation at creation; model_construct
            # keeps studies readable if a later version tightens the limits.
            budget=Budget.model_construct(**study.budget),
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
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid cursor '{cursor}'") from exc
    if not is_resource_id(study_id):
        raise BadRequest(f"invalid cursor '{cursor}'")
    return created_at, study_id


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
