"""Fits of a study: queueing, loading the labels, running the solver, storing results.

A fit goes through three steps, each in its own transaction so that no
database lock is held while the solver computes (see :mod:`app.jobs.runner`):

1. :func:`load_fit_inputs` reads the study and all labels the fit uses in one
   query and turns them into per-task arrays;
2. :func:`compute_fit` calls the solver driver for the study's algorithm and
   the fit's phase, without touching the database;
3. :func:`store_fit_success` writes the arrays and moves the study to its
   next phase when the fit completes the current one.

Which labels a fit uses:

- a pilot-phase fit (Algorithm 2) uses the pilot labels only;
- a main-phase or later fit of Algorithm 2 uses the labels of every phase.
  When the study setting ``strict_phase_split`` is true, it uses only those
  posted from the main phase on, which is the method's strict split (the
  second phase refits on fresh samples);
- a fit of Algorithm 1 uses every source label; the target estimate is the
  relevance-weighted sum of the source estimates, so target labels are not
  used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.codec import decode_array, decode_rows, encode_array
from app.db.models import Comparison, Fit, Study, utcnow
from app.problems import Conflict, FieldError, NotFound, ValidationProblem
from app.schemas.common import is_resource_id
from app.schemas.studies import SERVICE_SETTINGS
from app.services.quotas import (
    COUNTED_PHASES,
    collected_counts,
    pilot_fit,
    plan_phase,
    source_tasks,
    target_task,
    weights_vector,
)
from solvers.algorithms import (
    SolverSettings,
    run_known_relevance,
    run_main,
    run_pilot,
)
from solvers.data import TaskData
from solvers.policy import confidence_radius

logger = logging.getLogger(__name__)

# Study settings read by the service; every other key is a solver setting.
SERVICE_SETTING_KEYS = frozenset(SERVICE_SETTINGS)


class FitNotFound(NotFound):
    """No fit with the requested id belongs to the study."""

    def __init__(self, study_id: str, fit_id: str) -> None:
        super().__init__(f"fit '{fit_id}' not found in study '{study_id}'")


class FitPending(Conflict):
    """A fit of the study is queued or running, so another one is not queued."""

    title = "Fit already pending"
    slug = "fit-pending"

    def __init__(self, study_id: str, fit_id: str, status: str) -> None:
        super().__init__(
            f"fit '{fit_id}' of study '{study_id}' is {status}; wait until it "
            f"finishes (GET /v1/studies/{study_id}/fits/{fit_id}) before "
            "queuing another",
            extra={"fit_id": fit_id},
        )


class NoModel(NotFound):
    """The study has no succeeded fit yet."""

    title = "No model yet"
    slug = "no-model"

    def __init__(self, study_id: str) -> None:
        super().__init__(
            f"study '{study_id}' has no succeeded fit yet; post labels until the "
            "phase's quotas are met, or queue a fit with POST "
            f"/v1/studies/{study_id}/fits"
        )


@dataclass
class FitInputs:
    """Everything a fit computes from, read in one transaction.

    ``sources`` and ``target`` hold the labels the fit uses. ``relevance`` is
    the given relevance (Algorithm 1) or the pilot fit's estimate (main phase
    of Algorithm 2), in source order. ``completes_phase`` is true when the
    fit serves the study's current phase and the labels of that phase meet
    all its quotas.
    """

    fit_id: str
    study_id: str
    algorithm: str
    phase: str
    rank: int | None
    dimension: int
    sources: list[TaskData]
    target: TaskData
    relevance: np.ndarray | None
    relevance_fit_id: str | None
    prior: np.ndarray | None
    solver_settings: dict[str, Any]
    budget: dict[str, Any]
    phases_used: tuple[str, ...]
    labels_by_phase: dict[str, dict[str, int]]
    completes_phase: bool

    @property
    def labels(self) -> dict[str, int]:
        """Labels used per task name, sources first."""
        counts = {task.name: task.n for task in self.sources}
        counts[self.target.name] = self.target.n
        return counts


@dataclass
class FitOutcome:
    """Arrays and summaries of a finished fit, ready to store.

    Shapes: ``theta`` (d,), ``basis`` (d, k), ``curvature`` (d, d),
    ``source_thetas`` (d, M).
    """

    theta: np.ndarray
    basis: np.ndarray
    curvature: np.ndarray
    source_thetas: np.ndarray
    relevance: dict[str, float]
    rank: int
    confidence_radius: float
    diagnostics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    """Decoded arrays of a succeeded fit, as the policy and model endpoints use them."""

    fit_id: str
    phase: str
    theta: np.ndarray
    basis: np.ndarray
    curvature: np.ndarray
    source_thetas: np.ndarray
    relevance: dict[str, float]
    rank: int
    confidence_radius: float


# ---------------------------------------------------------------------------
# Queue and read


def queue_fit(session: Session, study: Study, *, trigger: str) -> Fit:
    """Add a queued fit of the study's current phase and return it."""
    now = utcnow()
    fit = Fit(
        study_id=study.id,
        status="queued",
        phase=study.phase,
        trigger=trigger,
        created_at=now,
        attempts=0,
        labels={},
    )
    session.add(fit)
    session.flush()
    logger.info(
        "fit.queued fit_id=%s study_id=%s phase=%s trigger=%s",
        fit.id,
        study.id,
        fit.phase,
        trigger,
    )
    return fit


def pending_fit(session: Session, study_id: str) -> Fit | None:
    """Return the oldest queued or running fit of the study, of any trigger."""
    statement = (
        select(Fit)
        .where(Fit.study_id == study_id, Fit.status.in_(("queued", "running")))
        .order_by(Fit.created_at, Fit.id)
        .limit(1)
    )
    return session.scalars(statement).first()


def tasks_without_labels(session: Session, study: Study) -> list[str]:
    """Return the tasks that a fit of the study's current phase needs but lack labels.

    Every source task needs labels from the phases the fit uses
    (:func:`phases_used`). The target needs pilot labels for a pilot fit of
    Algorithm 2; a main fit falls back to the relevance-weighted sum of the
    source estimates without target labels, and Algorithm 1 never uses them.
    """
    phases = phases_used(study, study.phase)
    counts = collected_counts(session, study.id)
    needed = list(source_tasks(study))
    if study.algorithm == "active" and study.phase == "pilot":
        needed.append(target_task(study))
    return [
        task.name
        for task in needed
        if sum(counts.get(task.id, {}).get(phase, 0) for phase in phases) == 0
    ]


def queue_manual_fit(session: Session, study: Study) -> Fit:
    """Queue a fit requested by a client, after checking that it can run.

    The caller must hold the study row lock (or SQLite's write lock), so two
    concurrent requests cannot both pass the pending check.

    Raises :class:`FitPending` (409) when a fit of the study is queued or
    running, and :class:`~app.problems.ValidationProblem` (422) naming every
    task the fit needs that has no labels.
    """
    pending = pending_fit(session, study.id)
    if pending is not None:
        raise FitPending(study.id, pending.id, pending.status)
    empty = tasks_without_labels(session, study)
    if empty:
        phases = ", ".join(phases_used(study, study.phase))
        raise ValidationProblem(
            f"a {study.phase}-phase fit needs labels of every task it uses; post "
            "labels first",
            [
                FieldError(
                    None,
                    f"tasks.{name}",
                    f"task '{name}' has no labels of phase(s) {phases}",
                )
                for name in empty
            ],
        )
    return queue_fit(session, study, trigger="manual")


def get_fit(session: Session, study_id: str, fit_id: str) -> Fit:
    """Load a fit of the study or raise :class:`FitNotFound` (404).

    An id that is not UUID-shaped gets 404 without a query.
    """
    if not is_resource_id(fit_id):
        raise FitNotFound(study_id, fit_id)
    fit = session.scalars(
        select(Fit).where(Fit.id == fit_id, Fit.study_id == study_id)
    ).first()
    if fit is None:
        raise FitNotFound(study_id, fit_id)
    return fit


def list_fits(
    session: Session, study_id: str, *, limit: int, status: str | None = None
) -> list[Fit]:
    """Return the study's fits, newest first, at most ``limit`` of them."""
    statement = select(Fit).where(Fit.study_id == study_id)
    if status is not None:
        statement = statement.where(Fit.status == status)
    statement = statement.order_by(Fit.created_at.desc(), Fit.id.desc()).limit(limit)
    return list(session.scalars(statement))


def latest_good_fit(session: Session, study_id: str) -> Fit | None:
    """Return the most recently finished succeeded fit of the study, or None."""
    statement = (
        select(Fit)
        .where(Fit.study_id == study_id, Fit.status == "succeeded")
        .order_by(Fit.finished_at.desc(), Fit.created_at.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def latest_good_fit_id(session: Session, study_id: str) -> str:
    """Return the id of the latest succeeded fit or raise :class:`NoModel` (404)."""
    statement = (
        select(Fit.id)
        .where(Fit.study_id == study_id, Fit.status == "succeeded")
        .order_by(Fit.finished_at.desc(), Fit.created_at.desc())
        .limit(1)
    )
    fit_id = session.scalar(statement)
    if fit_id is None:
        raise NoModel(study_id)
    return fit_id


def decode_model(fit: Fit, dimension: int, n_sources: int) -> Model:
    """Decode the stored arrays of a succeeded fit."""
    rank = int(fit.rank)
    return Model(
        fit_id=fit.id,
        phase=fit.phase,
        theta=decode_array(fit.theta, (dimension,)),
        basis=decode_array(fit.basis, (dimension, rank)),
        curvature=decode_array(fit.curvature, (dimension, dimension)),
        source_thetas=decode_array(fit.source_thetas, (dimension, n_sources)),
        relevance=dict(fit.relevance or {}),
        rank=rank,
        confidence_radius=float(fit.confidence_radius),
    )


# ---------------------------------------------------------------------------
# Step 1: load


def phases_used(study: Study, phase: str) -> tuple[str, ...]:
    """Return the phases whose labels a fit of ``phase`` uses (see module docs)."""
    if study.algorithm == "active" and phase == "pilot":
        return ("pilot",)
    if study.algorithm == "active" and study.settings.get("strict_phase_split"):
        return ("main", "complete")
    return ("pilot", "main", "complete")


def load_fit_inputs(session: Session, fit_id: str) -> FitInputs:
    """Read the fit's study and labels; one query loads every label it uses.

    The feature blobs are joined and viewed as a float64 array in one step,
    and the rows are split by task with boolean masks, so there is no Python
    arithmetic per row.
    """
    fit = session.get(Fit, fit_id)
    if fit is None:
        raise LookupError(f"fit '{fit_id}' does not exist")
    study = session.get(Study, fit.study_id)
    sources = source_tasks(study)
    target = target_task(study)
    phases = phases_used(study, fit.phase)

    statement = (
        select(
            Comparison.task_id, Comparison.phase, Comparison.label, Comparison.features
        )
        .where(Comparison.study_id == study.id, Comparison.phase.in_(phases))
        .order_by(Comparison.id)
    )
    rows = session.execute(statement).all()
    if rows:
        task_column, phase_column, label_column, blobs = zip(*rows, strict=True)
    else:
        task_column, phase_column, label_column, blobs = (), (), (), ()
    task_ids = np.asarray(task_column, dtype=np.int64)
    row_phases = np.asarray(phase_column, dtype=object)
    labels = np.asarray(label_column, dtype=np.float64)
    features = decode_rows(list(blobs), study.dimension)

    # Split by task; count each task's labels per phase for the diagnostics
    # and the phase-completion check.
    tasks_data: list[TaskData] = []
    labels_by_phase: dict[str, dict[str, int]] = {}
    for task in [*sources, target]:
        mask = task_ids == task.id
        tasks_data.append(TaskData(task.name, features[mask], labels[mask]))
        labels_by_phase[task.name] = {
            phase: int(np.count_nonzero(row_phases[mask] == phase)) for phase in phases
        }

    # The fit completes its phase when the labels of that phase meet the plan.
    relevance_fit = None
    completes = False
    if fit.phase == study.phase and fit.phase in ("pilot", "main"):
        plan = plan_phase(session, study, fit.phase)
        counted = COUNTED_PHASES[fit.phase]
        completes = all(
            sum(labels_by_phase[task.name].get(phase, 0) for phase in counted)
            >= planned
            for task, planned in zip(plan.tasks, plan.planned, strict=True)
        )

    relevance = None
    if study.algorithm == "known_relevance":
        relevance = weights_vector(study.relevance, sources)
    elif fit.phase != "pilot":
        relevance_fit = pilot_fit(session, study.id)
        if relevance_fit is not None:
            relevance = weights_vector(relevance_fit.relevance, sources)
    prior = weights_vector(study.prior, sources) if study.prior is not None else None

    solver_settings = {
        key: value
        for key, value in (study.settings or {}).items()
        if key not in SERVICE_SETTING_KEYS
    }
    return FitInputs(
        fit_id=fit.id,
        study_id=study.id,
        algorithm=study.algorithm,
        phase=fit.phase,
        rank=study.rank,
        dimension=study.dimension,
        sources=tasks_data[:-1],
        target=tasks_data[-1],
        relevance=relevance,
        relevance_fit_id=relevance_fit.id if relevance_fit is not None else None,
        prior=prior,
        solver_settings=solver_settings,
        budget=dict(study.budget),
        phases_used=phases,
        labels_by_phase=labels_by_phase,
        completes_phase=completes,
    )


# ---------------------------------------------------------------------------
# Step 2: compute


def compute_fit(inputs: FitInputs) -> FitOutcome:
    """Run the solver driver for the study's algorithm and the fit's phase.

    Raises the solver's :class:`~solvers.errors.SolverError` on invalid or
    insufficient data; the message names the task at fault.
    """
    settings = SolverSettings.from_mapping(inputs.solver_settings)
    names = [task.name for task in inputs.sources]

    if inputs.algorithm == "known_relevance":
        result = run_known_relevance(
            inputs.sources, inputs.relevance, inputs.rank, settings
        )
        outcome = _outcome_from_result(result, names)
    elif inputs.phase == "pilot":
        outcome = _pilot_outcome(inputs, settings, names)
    else:
        result = run_main(
            inputs.sources,
            inputs.target,
            inputs.rank,
            settings,
            relevance=inputs.relevance,
        )
        outcome = _outcome_from_result(result, names)

    outcome.diagnostics.update(
        {
            "phases_used": list(inputs.phases_used),
            "labels_by_phase": inputs.labels_by_phase,
            "relevance_fit_id": inputs.relevance_fit_id,
            "completes_phase": inputs.completes_phase,
        }
    )
    return outcome


def _outcome_from_result(result: Any, names: list[str]) -> FitOutcome:
    return FitOutcome(
        theta=result.theta,
        basis=result.basis,
        curvature=result.curvature,
        source_thetas=result.source_thetas,
        relevance=_relevance_dict(names, result.relevance),
        rank=int(result.rank),
        confidence_radius=float(result.confidence_radius),
        diagnostics=dict(result.diagnostics),
    )


def _pilot_outcome(
    inputs: FitInputs, settings: SolverSettings, names: list[str]
) -> FitOutcome:
    """Run phase 1 of Algorithm 2 and give its target estimate a confidence radius.

    The pilot's target estimate is a full-dimensional ridge fit on the pilot
    target labels, so its radius uses ``d`` degrees of freedom and
    ``n_pre`` effective labels: ``scale * sqrt(chi2.ppf(level, d) / n_pre)``,
    unless the study overrides the radius.
    """
    result = run_pilot(
        inputs.sources,
        inputs.target,
        inputs.prior,
        inputs.rank,
        settings,
        planned_source_labels=inputs.budget.get("source"),
        planned_target_labels=inputs.budget.get("target"),
    )
    if settings.confidence_radius is not None:
        radius = float(settings.confidence_radius)
        radius_record: dict[str, Any] = {"value": radius, "rule": "override"}
    else:
        radius = float(
            confidence_radius(
                inputs.target.n,
                inputs.dimension,
                confidence_level=settings.confidence_level,
                scale=settings.confidence_scale,
            )
        )
        radius_record = {
            "value": radius,
            "rule": "scale * sqrt(chi2.ppf(level, df=dimension) / target_labels)",
            "effective_labels": inputs.target.n,
            "degrees_of_freedom": inputs.dimension,
            "confidence_level": settings.confidence_level,
            "scale": settings.confidence_scale,
        }
    diagnostics = dict(result.diagnostics)
    diagnostics["confidence_radius"] = radius_record
    diagnostics["target_estimate"] = "pilot_full_dimensional_fit"
    return FitOutcome(
        theta=result.target_theta,
        basis=result.basis,
        curvature=result.curvature,
        source_thetas=result.source_thetas,
        relevance=_relevance_dict(names, result.relevance),
        rank=int(result.rank),
        confidence_radius=radius,
        diagnostics=diagnostics,
    )


def _relevance_dict(names: list[str], values: np.ndarray) -> dict[str, float]:
    return {name: float(value) for name, value in zip(names, values, strict=True)}


# ---------------------------------------------------------------------------
# Step 3: store


@dataclass
class FitComputation:
    """Result of computing a fit, as :func:`store_fit_success` stores it.

    It is small enough to send between processes: the per-task label counts,
    the phase-completion flag and the outcome arrays, without the labels.
    """

    phase: str
    labels: dict[str, int]
    completes_phase: bool
    outcome: FitOutcome


def load_and_compute(session: Session, fit_id: str) -> FitComputation:
    """Load the fit's labels with ``session``, then compute the fit.

    The session's transaction is rolled back before the solver runs, so no
    snapshot or lock is held while it computes.
    """
    inputs = load_fit_inputs(session, fit_id)
    session.rollback()
    outcome = compute_fit(inputs)
    return FitComputation(inputs.phase, inputs.labels, inputs.completes_phase, outcome)


def store_fit_success(
    session: Session, fit: Fit, computation: FitComputation
) -> str | None:
    """Write a finished fit and move the study on when the fit completes its phase.

    ``fit`` must be locked by the caller (row lock on PostgreSQL, the write
    lock on SQLite). Returns the study's new phase when it moved, else None.
    """
    # Imported here because the phase rules queue fits through this module.
    from app.services.phases import advance_phase

    outcome = computation.outcome
    now = utcnow()
    fit.status = "succeeded"
    fit.finished_at = now
    fit.heartbeat_at = now
    fit.error = None
    fit.labels = computation.labels
    fit.relevance = outcome.relevance
    fit.diagnostics = outcome.diagnostics
    fit.rank = outcome.rank
    fit.confidence_radius = outcome.confidence_radius
    fit.theta = encode_array(outcome.theta)
    fit.basis = encode_array(outcome.basis)
    fit.curvature = encode_array(outcome.curvature)
    fit.source_thetas = encode_array(outcome.source_thetas)
    session.flush()

    if not computation.completes_phase:
        return None
    study = session.scalars(
        select(Study).where(Study.id == fit.study_id).with_for_update()
    ).one()
    return advance_phase(session, study, fit)
