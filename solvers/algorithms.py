"""Drivers of Algorithm 1 (known relevance) and Algorithm 2 (active, two phases).

Each driver is a pure function: per-task data and a `SolverSettings` in, a
result dataclass out. The caller decides which tasks and labels to pass (for
example whether phase 2 reuses the pilot labels); the drivers only fit.

Ridge scaling
-------------
The method's conditions on the ridge weights (eqs. B.3 and C.2) are
``B_x^2 / d <~ N lambda / M <~ k / B_theta^2`` for a joint fit on ``N``
source labels over ``M`` tasks and ``B_x^2 / d <~ n lambda <~ k / B_theta^2``
for a single-task fit on ``n`` labels. The defaults put the product in the
middle of that range for features with unit variance per coordinate:

- joint fit: ``lambda = ridge_scale * M / N``;
- single-task fit: ``lambda = ridge_scale / n``.

So the per-task penalty ``lambda n_m ||theta_m||^2`` stays of order one while
the likelihood grows with the labels, and the ridge bias vanishes as ``1/n``.
A fixed lambda would instead keep a bias of a few percent at any label count.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from solvers.allocation import active_sample
from solvers.data import TaskData, check_task, check_tasks
from solvers.errors import InsufficientDataError, InvalidInputError
from solvers.logistic import LogisticFit, fit_ridge_logistic
from solvers.lowrank import LowRankFit, fit_lowrank, select_rank
from solvers.policy import confidence_radius
from solvers.relevance import (
    curvature_matrix,
    default_ellipsoid_radius,
    default_lasso_penalty,
    solve_relevance_lasso,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AlgorithmResult",
    "PilotResult",
    "SolverSettings",
    "joint_ridge",
    "plan_quotas",
    "rank_candidates",
    "remaining_quotas",
    "run_known_relevance",
    "run_main",
    "run_pilot",
    "single_task_ridge",
]


@dataclass(frozen=True)
class SolverSettings:
    """Constants of the solver layer; every one can be overridden per study.

    Attributes
    ----------
    ridge_scale : float, default=1.0
        Multiplier of the ridge rules: ``lambda = ridge_scale * M / N`` for a
        joint fit on N source labels over M tasks and ``ridge_scale / n`` for
        a single-task fit on n labels (eqs. B.3, C.2). Sized for features
        with about unit variance per coordinate; rescale it by the mean
        squared feature coordinate for other feature scales.
    ridge : float or None, default=None
        A fixed lambda > 0 for every fit, replacing both scaling rules. A fixed
        value biases estimates by a share that does not shrink with the
        label count, so leave it unset unless reproducing another setup.
    lasso_penalty : float or None, default=None
        beta of eq. 3.12. None applies `default_lasso_penalty` (the universal
        Lasso penalty, shrinking as one over the square root of the pilot
        target labels) times ``lasso_penalty_scale``.
    lasso_penalty_scale : float, default=1.0
        Multiplier of the default beta rule.
    ellipsoid_radius : float or None, default=None
        R of eq. 3.12. None applies `default_ellipsoid_radius` with
        ``ellipsoid_radius_scale``.
    ellipsoid_radius_scale : float, default=4.0
        Multiplier of the default R rule.
    confidence_level : float, default=0.95
        Coverage level of the confidence radius rule.
    confidence_radius : float or None, default=None
        A fixed radius r of the confidence set (eqs. 3.3, 3.15), replacing the
        rule.
    confidence_scale : float, default=1.0
        Multiplier of the confidence radius rule (the alpha of eq. B.3 up to
        the rule's own scaling).
    rank_candidates : tuple of int or None, default=None
        Ranks tried when the caller gives no rank. None means
        ``1 .. min(M, d, max_rank)``.
    max_rank : int, default=8
        Largest rank tried by default.
    rank_folds : int, default=3
        Cross-validation folds of the rank selection.
    rank_seed : int, default=0
        Seed of the fold assignment.
    lowrank_tol, lowrank_max_iter : float, int, default=1e-6, 500
        Stopping rule of the joint low-rank fit.
    logistic_tol, logistic_max_iter : float, int, default=1e-8, 200
        Stopping rule of single-task fits.
    lasso_tol, lasso_max_iter : float, int, default=1e-10, 10000
        Stopping rule of the relevance Lasso.
    """

    ridge_scale: float = 1.0
    ridge: float | None = None
    lasso_penalty: float | None = None
    lasso_penalty_scale: float = 1.0
    ellipsoid_radius: float | None = None
    ellipsoid_radius_scale: float = 4.0
    confidence_level: float = 0.95
    confidence_radius: float | None = None
    confidence_scale: float = 1.0
    rank_candidates: tuple[int, ...] | None = None
    max_rank: int = 8
    rank_folds: int = 3
    rank_seed: int = 0
    lowrank_tol: float = 1e-6
    lowrank_max_iter: int = 500
    logistic_tol: float = 1e-8
    logistic_max_iter: int = 200
    lasso_tol: float = 1e-10
    lasso_max_iter: int = 10_000

    def __post_init__(self) -> None:
        for name in (
            "ridge_scale",
            "lasso_penalty_scale",
            "ellipsoid_radius_scale",
            "confidence_scale",
            "lowrank_tol",
            "logistic_tol",
            "lasso_tol",
        ):
            _require_number(name, getattr(self, name), positive=True)
        for name in ("ridge", "ellipsoid_radius"):
            value = getattr(self, name)
            if value is not None:
                _require_number(name, value, positive=True)
        for name in ("lasso_penalty", "confidence_radius"):
            value = getattr(self, name)
            if value is not None:
                _require_number(name, value, positive=False)
        level = _require_number(
            "confidence_level", self.confidence_level, positive=True
        )
        if not level < 1.0:
            raise InvalidInputError(
                f"setting 'confidence_level' must lie in (0, 1), got {level}"
            )
        for name in (
            "max_rank",
            "rank_folds",
            "lowrank_max_iter",
            "logistic_max_iter",
            "lasso_max_iter",
        ):
            _require_integer(name, getattr(self, name), minimum=1)
        if self.rank_folds < 2:
            raise InvalidInputError(
                f"setting 'rank_folds' must be at least 2, got {self.rank_folds}"
            )
        _require_integer("rank_seed", self.rank_seed, minimum=0)
        if self.rank_candidates is not None:
            if not isinstance(self.rank_candidates, tuple) or not self.rank_candidates:
                raise InvalidInputError(
                    "setting 'rank_candidates' must be a non-empty tuple of ranks, "
                    f"got {self.rank_candidates!r}"
                )
            for rank in self.rank_candidates:
                _require_integer("rank_candidates", rank, minimum=1)

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any] | None = None) -> SolverSettings:
        """Build settings from user overrides, rejecting unknown keys.

        Lists given for ``rank_candidates`` (as JSON produces) become tuples.

        Raises
        ------
        InvalidInputError
            If a key is not a setting (the message lists the valid ones) or a
            value is invalid.
        """
        if overrides is None:
            return cls()
        if not isinstance(overrides, Mapping):
            raise InvalidInputError(
                f"solver settings must be a mapping, got {type(overrides).__name__}"
            )
        valid = [item.name for item in fields(cls)]
        unknown = sorted(str(key) for key in overrides if key not in valid)
        if unknown:
            raise InvalidInputError(
                f"unknown solver setting(s) {', '.join(repr(k) for k in unknown)}; "
                f"valid settings are: {', '.join(valid)}"
            )
        values = dict(overrides)
        candidates = values.get("rank_candidates")
        if isinstance(candidates, list):
            values["rank_candidates"] = tuple(candidates)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-safe dict (tuples become lists)."""
        values = asdict(self)
        if values["rank_candidates"] is not None:
            values["rank_candidates"] = list(values["rank_candidates"])
        return values


def _require_number(name: str, value: Any, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise InvalidInputError(f"setting '{name}' must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0.0 or (positive and number == 0.0):
        bound = "> 0" if positive else ">= 0"
        raise InvalidInputError(
            f"setting '{name}' must be a finite number {bound}, got {value!r}"
        )
    return number


def _require_integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"setting '{name}' must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidInputError(
            f"setting '{name}' must be at least {minimum}, got {value}"
        )
    return int(value)


@dataclass(frozen=True)
class AlgorithmResult:
    """Target estimate and confidence set of Algorithm 1 or of phase 2 of Algorithm 2.

    Attributes
    ----------
    theta : ndarray of shape (d,)
        Target estimate.
    basis : ndarray of shape (d, k)
        Orthonormal basis of the learned subspace.
    source_thetas : ndarray of shape (d, M)
        Joint low-rank estimates of the source parameters.
    relevance : ndarray of shape (M,)
        The relevance used (given, or estimated; see ``diagnostics``).
    curvature : ndarray of shape (d, d)
        Lambda of eq. 3.3, the metric of the confidence set.
    confidence_radius : float
        Radius r of ``{theta : ||theta - theta_hat||_Lambda <= r}``.
    rank : int
        Rank k of the joint fit.
    task_names : list of str
        Source task names, in column order.
    diagnostics : dict
        JSON-safe record of the fit: labels per task, ridge values, the
        low-rank and target fits' convergence, the rank choice and its
        evidence, and the radius rule.
    """

    theta: np.ndarray
    basis: np.ndarray
    source_thetas: np.ndarray
    relevance: np.ndarray
    curvature: np.ndarray
    confidence_radius: float
    rank: int
    task_names: list[str] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PilotResult:
    """Relevance estimate of phase 1 of Algorithm 2 (eqs. 3.10-3.12).

    Attributes
    ----------
    relevance : ndarray of shape (M,)
        Lasso estimate ``nu_hat_pre``; it sets the phase-2 quotas through
        `plan_quotas`.
    prior : ndarray of shape (M,)
        The prior ``nu0`` used, normalised to ``||nu0||_1 = 1``.
    source_thetas : ndarray of shape (d, M)
        Joint low-rank estimates on the pilot source data.
    basis : ndarray of shape (d, k)
        Orthonormal basis of their span.
    target_theta : ndarray of shape (d,)
        Full-dimensional ridge estimate of the target on the pilot target data.
    curvature : ndarray of shape (d, d)
        Lambda of the pilot fit, with the smallest ridge weight in play.
    rank : int
    lasso_penalty : float
        beta used.
    ellipsoid_radius : float
        R used.
    task_names : list of str
    diagnostics : dict
        JSON-safe record: labels, ridge values, fits' convergence, the Lasso
        certificate, the fit residual ``||Theta nu_hat - theta_pre||_Lambda``
        and ``||nu_hat||_1``.
    """

    relevance: np.ndarray
    prior: np.ndarray
    source_thetas: np.ndarray
    basis: np.ndarray
    target_theta: np.ndarray
    curvature: np.ndarray
    rank: int
    lasso_penalty: float
    ellipsoid_radius: float
    task_names: list[str] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)


def joint_ridge(settings: SolverSettings, source_labels: Sequence[int]) -> float:
    """Return lambda of a joint fit: ``ridge_scale * M / N`` (eqs. B.3, C.2).

    ``source_labels`` contains the label count of each of the M tasks and N is
    their sum. ``settings.ridge`` replaces the rule when set.
    """
    if settings.ridge is not None:
        return float(settings.ridge)
    total = int(np.sum(source_labels))
    if total < 1:
        raise InsufficientDataError("the source tasks have no labels")
    return settings.ridge_scale * len(source_labels) / total


def single_task_ridge(settings: SolverSettings, n_labels: int) -> float:
    """Return lambda of a single-task fit: ``ridge_scale / n`` (eq. C.2)."""
    if settings.ridge is not None:
        return float(settings.ridge)
    if n_labels < 1:
        raise InsufficientDataError("a single-task fit needs at least one label")
    return settings.ridge_scale / n_labels


def plan_quotas(total: int, relevance: ArrayLike) -> np.ndarray:
    """Return per-task label quotas for a source budget (Active-Sample, eq. 3.1).

    Half of ``total`` follows ``|relevance|`` and half is uniform; the quotas
    are whole numbers that add up to ``total``. Use it with the prior for the
    pilot quotas and with `PilotResult.relevance` for the phase-2 quotas.
    """
    return active_sample(total, relevance)


def remaining_quotas(quotas: ArrayLike, collected: ArrayLike) -> np.ndarray:
    """Return how many labels each task still needs: ``max(quotas - collected, 0)``."""
    planned = _as_count_vector(quotas, "quotas")
    have = _as_count_vector(collected, "collected")
    if planned.shape != have.shape or planned.ndim != 1:
        raise InvalidInputError(
            f"quotas and collected counts must be vectors of one length, got "
            f"{planned.shape} and {have.shape}"
        )
    if np.any(planned < 0) or np.any(have < 0):
        raise InvalidInputError("quotas and collected counts must be non-negative")
    return np.maximum(planned - have, 0)


def _as_count_vector(values: ArrayLike, name: str) -> np.ndarray:
    """Return ``values`` as int64 or raise InvalidInputError naming ``name``."""
    try:
        array = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError("entries must be finite whole numbers")
        return np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as error:
        raise InvalidInputError(
            f"{name} must contain whole label counts: {error}"
        ) from None


def _check_planned_labels(value: Any, name: str) -> int | None:
    """Return a planned phase-2 label count as a positive int, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise InvalidInputError(f"{name} must be at least 1, got {value}")
    return int(value)


# ---------------------------------------------------------------------------
# Shared steps


def _as_settings(settings: SolverSettings | Mapping[str, Any] | None) -> SolverSettings:
    if isinstance(settings, SolverSettings):
        return settings
    return SolverSettings.from_mapping(settings)


def _check_relevance(values: ArrayLike, names: Sequence[str], label: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (len(names),):
        raise InvalidInputError(
            f"{label} must have one entry per source task ({len(names)}: "
            f"{', '.join(names)}), got shape {vector.shape}"
        )
    if not np.all(np.isfinite(vector)):
        bad = [names[m] for m in np.flatnonzero(~np.isfinite(vector))]
        raise InvalidInputError(
            f"{label} is NaN or infinite for task(s) {', '.join(repr(n) for n in bad)}"
        )
    return vector


def _check_sources(sources: Sequence[TaskData]) -> tuple[list[TaskData], int]:
    tasks, dimension = check_tasks(sources)
    for task in tasks:
        if task.n == 0:
            raise InsufficientDataError(f"task '{task.name}' has no labels")
    return tasks, dimension


def _check_target(target: TaskData, dimension: int, source_names: Sequence[str]):
    checked = check_task(target, dimension)
    if checked.name in source_names:
        raise InvalidInputError(
            f"target task '{checked.name}' has the same name as a source task"
        )
    return checked


def _fit_summary(fit: LowRankFit | LogisticFit) -> dict[str, Any]:
    return {
        "converged": bool(fit.converged),
        "n_iter": int(fit.n_iter),
        "objective": _finite_or_none(fit.objective),
        "gradient_norm": _finite_or_none(fit.gradient_norm),
        "message": str(fit.message),
    }


def _finite_or_none(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def rank_candidates(
    settings: SolverSettings, dimension: int, n_tasks: int
) -> list[int]:
    """Return the ranks that rank selection tries for d and M source tasks.

    Raises
    ------
    InvalidInputError
        If a rank in ``settings.rank_candidates`` exceeds ``min(d, M)``.
    """
    ceiling = min(dimension, n_tasks)
    if settings.rank_candidates is None:
        return list(range(1, min(ceiling, settings.max_rank) + 1))
    too_large = [rank for rank in settings.rank_candidates if rank > ceiling]
    if too_large:
        raise InvalidInputError(
            f"rank candidates {too_large} exceed min(d, M) = {ceiling} "
            f"(d = {dimension}, M = {n_tasks} source tasks)"
        )
    return sorted(set(settings.rank_candidates))


def _fit_sources(
    tasks: list[TaskData],
    dimension: int,
    rank: int | None,
    ridge: float,
    settings: SolverSettings,
) -> tuple[LowRankFit, dict[str, Any]]:
    """Fit the sources jointly (eqs. 3.2, 3.10, 3.13), choosing the rank if needed."""
    ceiling = min(dimension, len(tasks))
    if rank is None:
        candidates = rank_candidates(settings, dimension, len(tasks))
        selection = select_rank(
            tasks,
            candidates,
            ridge,
            n_folds=settings.rank_folds,
            seed=settings.rank_seed,
        )
        rank = int(selection.rank)
        rank_record: dict[str, Any] = {
            "chosen": rank,
            "source": "selected",
            "candidates": [int(c) for c in selection.candidates],
            "heldout_log_likelihood": [
                _finite_or_none(v) for v in selection.heldout_log_likelihood
            ],
            "standard_errors": [
                _finite_or_none(v) for v in getattr(selection, "standard_errors", [])
            ],
            "n_folds": int(selection.n_folds),
            "message": str(selection.message),
        }
    else:
        _require_rank(rank, ceiling, dimension, len(tasks))
        rank_record = {"chosen": int(rank), "source": "given"}

    fit = fit_lowrank(
        tasks,
        rank,
        ridge,
        tol=settings.lowrank_tol,
        max_iter=settings.lowrank_max_iter,
    )
    return fit, rank_record


def _require_rank(rank: Any, ceiling: int, dimension: int, n_tasks: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise InvalidInputError(f"rank must be an integer or None, got {rank!r}")
    if not 1 <= rank <= ceiling:
        raise InvalidInputError(
            f"rank must lie between 1 and min(d, M) = {ceiling} "
            f"(d = {dimension}, M = {n_tasks} source tasks), got {rank}"
        )


def _radius(
    settings: SolverSettings, effective_labels: float, rank: int
) -> tuple[float, dict[str, Any]]:
    """Apply the confidence radius rule, or the override."""
    if settings.confidence_radius is not None:
        radius = float(settings.confidence_radius)
        return radius, {"value": radius, "rule": "override"}
    if not math.isfinite(effective_labels):
        # Zero relevance: the target estimate is the exact zero vector.
        return 0.0, {"value": 0.0, "rule": "zero relevance", "effective_labels": None}
    radius = float(
        confidence_radius(
            effective_labels,
            rank,
            confidence_level=settings.confidence_level,
            scale=settings.confidence_scale,
        )
    )
    record = {
        "value": radius,
        "rule": "scale * sqrt(chi2.ppf(level, df=rank) / effective_labels)",
        "effective_labels": float(effective_labels),
        "confidence_level": settings.confidence_level,
        "scale": settings.confidence_scale,
    }
    return radius, record


def _variance_labels(relevance: np.ndarray, counts: np.ndarray) -> float:
    """Return ``sum_m nu_m^2 / n_m``, the variance factor of ``sum_m nu_m theta_m``."""
    return float(np.sum(relevance**2 / counts))


def _labels(tasks: Sequence[TaskData]) -> dict[str, int]:
    return {task.name: int(task.n) for task in tasks}


# ---------------------------------------------------------------------------
# Algorithm 1


def run_known_relevance(
    sources: Sequence[TaskData],
    relevance: ArrayLike,
    rank: int | None = None,
    settings: SolverSettings | Mapping[str, Any] | None = None,
) -> AlgorithmResult:
    """Estimate the target with known relevance (Algorithm 1, eqs. 3.2-3.3).

    Steps: the joint low-rank fit of the sources with
    ``lambda = ridge_scale * M / N`` (eq. 3.2), the target estimate
    ``theta_hat = sum_m nu_m theta_hat_m``, the curvature Lambda (eq. 3.3)
    with the same lambda, and the radius of the confidence set from
    ``effective_labels = 1 / sum_m nu_m^2 / n_m`` (the variance of the
    mixture of independent fits with per-label Fisher information Lambda).

    Parameters
    ----------
    sources : sequence of TaskData
        Labels of the M source tasks, every task with at least one label.
        The quotas that produced them are the caller's choice (normally
        `plan_quotas` with the relevance).
    relevance : array_like of shape (M,)
        Known relevance ``nu``.
    rank : int or None
        Rank k of the joint fit; None selects it by held-out likelihood.
    settings : SolverSettings, mapping or None

    Returns
    -------
    AlgorithmResult

    Raises
    ------
    InsufficientDataError
        If a source task has no labels (the message names it).
    InvalidInputError
        If the tasks disagree in dimension or contain invalid values, or the
        relevance or rank is invalid.
    """
    settings = _as_settings(settings)
    tasks, dimension = _check_sources(sources)
    names = [task.name for task in tasks]
    nu = _check_relevance(relevance, names, "relevance")
    counts = np.array([task.n for task in tasks], dtype=np.float64)

    # Step 1: joint fit.
    ridge = joint_ridge(settings, counts)
    fit, rank_record = _fit_sources(tasks, dimension, rank, ridge, settings)

    # Step 2: target estimate, curvature and radius.
    theta = fit.thetas @ nu
    curvature = curvature_matrix(tasks, fit.thetas, ridge)
    variance = _variance_labels(nu, counts)
    effective = 1.0 / variance if variance > 0.0 else math.inf
    radius, radius_record = _radius(settings, effective, fit.rank)

    diagnostics = {
        "algorithm": "known_relevance",
        "labels": _labels(tasks),
        "source_labels_total": int(counts.sum()),
        "ridge": {"joint": ridge, "curvature": ridge},
        "lowrank_fit": _fit_summary(fit),
        "rank": rank_record,
        "target_estimate": "relevance_combination",
        "confidence_radius": radius_record,
        "settings": settings.to_dict(),
    }
    logger.info(
        "known-relevance fit done: tasks=%d labels=%d rank=%d converged=%s n_iter=%d",
        len(tasks),
        int(counts.sum()),
        fit.rank,
        fit.converged,
        fit.n_iter,
    )
    return AlgorithmResult(
        theta=theta,
        basis=fit.basis,
        source_thetas=fit.thetas,
        relevance=nu,
        curvature=curvature,
        confidence_radius=radius,
        rank=int(fit.rank),
        task_names=names,
        diagnostics=diagnostics,
    )


# ---------------------------------------------------------------------------
# Algorithm 2


def run_pilot(
    sources: Sequence[TaskData],
    target: TaskData,
    prior: ArrayLike | None = None,
    rank: int | None = None,
    settings: SolverSettings | Mapping[str, Any] | None = None,
    *,
    planned_source_labels: int | None = None,
    planned_target_labels: int | None = None,
) -> PilotResult:
    """Estimate the task relevance from pilot data (Algorithm 2, phase 1).

    Steps:

    1. joint low-rank fit of the pilot sources with
       ``lambda_pre_s = ridge_scale * M / N_pre`` (eq. 3.10);
    2. full-dimensional ridge fit of the pilot target with
       ``lambda_pre = ridge_scale / n_pre`` (eq. 3.11);
    3. Lambda on the pilot source data with the smallest ridge weight in
       play, ``min(lambda_pre_s, lambda_pre, lambda_s, lambda)``, where the
       phase-2 weights come from the planned phase-2 label counts when given;
    4. the ellipsoid-constrained Lasso (eq. 3.12) with beta and R from the
       settings or their default rules.

    Parameters
    ----------
    sources : sequence of TaskData
        Pilot labels of the M source tasks, at least one per task.
    target : TaskData
        Pilot labels of the target task, at least one.
    prior : array_like of shape (M,), optional
        Prior relevance ``nu0``; absolute values are normalised to
        ``||nu0||_1 = 1``. Uniform ``1/M`` when omitted. Tasks with prior 0
        get relevance 0.
    rank : int or None
        Rank of the joint fit; None selects it by held-out likelihood.
    settings : SolverSettings, mapping or None
    planned_source_labels, planned_target_labels : int, optional
        Phase-2 budgets ``N_s`` and ``n``, positive integers (not bool), used
        only for the smallest ridge weight of Lambda.

    Returns
    -------
    PilotResult

    Raises
    ------
    InsufficientDataError
        If a source task or the target has no labels (the message names it).
    InvalidInputError
        If shapes disagree, values are invalid, or the prior is all zero.
    """
    settings = _as_settings(settings)
    planned_source_labels = _check_planned_labels(
        planned_source_labels, "planned_source_labels"
    )
    planned_target_labels = _check_planned_labels(
        planned_target_labels, "planned_target_labels"
    )
    tasks, dimension = _check_sources(sources)
    names = [task.name for task in tasks]
    target = _check_target(target, dimension, names)
    if target.n == 0:
        raise InsufficientDataError(f"task '{target.name}' has no labels")
    counts = np.array([task.n for task in tasks], dtype=np.float64)

    # Prior, normalised to unit l1 norm.
    if prior is None:
        nu0 = np.full(len(tasks), 1.0 / len(tasks))
    else:
        nu0 = np.abs(_check_relevance(prior, names, "prior"))
        if nu0.sum() == 0.0:
            raise InvalidInputError("prior must have at least one non-zero entry")
        nu0 = nu0 / nu0.sum()

    # Steps 1-2: joint fit of the sources, full-dimensional fit of the target.
    source_ridge = joint_ridge(settings, counts)
    fit, rank_record = _fit_sources(tasks, dimension, rank, source_ridge, settings)
    target_ridge = single_task_ridge(settings, target.n)
    target_fit = fit_ridge_logistic(
        target.X,
        target.y,
        target_ridge,
        tol=settings.logistic_tol,
        max_iter=settings.logistic_max_iter,
        task=target.name,
    )

    # Step 3: Lambda with the smallest ridge weight in play.
    ridges = {"pilot_joint": source_ridge, "pilot_target": target_ridge}
    if planned_source_labels is not None:
        # N_s labels over M tasks: the rule only needs the total.
        planned = np.zeros(len(tasks), dtype=np.int64)
        planned[0] = planned_source_labels
        ridges["main_joint"] = joint_ridge(settings, planned)
    if planned_target_labels is not None:
        ridges["main_target"] = single_task_ridge(settings, planned_target_labels)
    curvature_ridge = min(ridges.values())
    curvature = curvature_matrix(tasks, fit.thetas, curvature_ridge)

    # Step 4: relevance Lasso.
    if settings.lasso_penalty is not None:
        penalty = float(settings.lasso_penalty)
        penalty_rule = "override"
    else:
        penalty = float(
            default_lasso_penalty(
                fit.thetas,
                curvature,
                int(target.n),
                source_labels=counts,
                prior=nu0,
                target_theta=target_fit.theta,
                scale=settings.lasso_penalty_scale,
            )
        )
        penalty_rule = "default_lasso_penalty"
    if settings.ellipsoid_radius is not None:
        radius = float(settings.ellipsoid_radius)
        radius_rule = "override"
    else:
        radius = float(
            default_ellipsoid_radius(
                fit.thetas,
                target_fit.theta,
                curvature,
                nu0,
                scale=settings.ellipsoid_radius_scale,
            )
        )
        radius_rule = "default_ellipsoid_radius"
    lasso = solve_relevance_lasso(
        fit.thetas,
        target_fit.theta,
        curvature,
        penalty,
        nu0,
        radius,
        tol=settings.lasso_tol,
        max_iter=settings.lasso_max_iter,
    )
    nu_hat = np.asarray(lasso.relevance, dtype=np.float64)
    misfit = fit.thetas @ nu_hat - target_fit.theta
    residual = math.sqrt(max(float(misfit @ curvature @ misfit), 0.0))

    diagnostics = {
        "algorithm": "active",
        "phase": "pilot",
        "labels": _labels(tasks),
        "target_labels": {target.name: int(target.n)},
        "source_labels_total": int(counts.sum()),
        "ridge": {**ridges, "curvature": curvature_ridge},
        "lowrank_fit": _fit_summary(fit),
        "target_fit": _fit_summary(target_fit),
        "rank": rank_record,
        "lasso": {
            "penalty": penalty,
            "penalty_rule": penalty_rule,
            "ellipsoid_radius": radius,
            "ellipsoid_radius_rule": radius_rule,
            "objective": _finite_or_none(lasso.objective),
            "n_iter": int(lasso.n_iter),
            "converged": bool(lasso.converged),
            "constraint_active": bool(lasso.constraint_active),
            "multiplier": _finite_or_none(lasso.multiplier),
            "optimality_gap": _finite_or_none(lasso.optimality_gap),
            "message": str(lasso.message),
        },
        "relevance_l1_norm": float(np.abs(nu_hat).sum()),
        "relevance_residual": residual,
        "settings": settings.to_dict(),
    }
    logger.info(
        "pilot fit done: tasks=%d labels=%d target_labels=%d rank=%d "
        "lowrank_converged=%s lasso_converged=%s",
        len(tasks),
        int(counts.sum()),
        target.n,
        fit.rank,
        fit.converged,
        lasso.converged,
    )
    return PilotResult(
        relevance=nu_hat,
        prior=nu0,
        source_thetas=fit.thetas,
        basis=fit.basis,
        target_theta=target_fit.theta,
        curvature=curvature,
        rank=int(fit.rank),
        lasso_penalty=penalty,
        ellipsoid_radius=radius,
        task_names=names,
        diagnostics=diagnostics,
    )


def run_main(
    sources: Sequence[TaskData],
    target: TaskData | None,
    rank: int | None = None,
    settings: SolverSettings | Mapping[str, Any] | None = None,
    *,
    relevance: ArrayLike | None = None,
) -> AlgorithmResult:
    """Estimate the target inside the learned subspace (Algorithm 2, phase 2).

    Steps:

    1. joint low-rank fit of the sources with ``lambda_s = ridge_scale * M / N``
       (eq. 3.13);
    2. the target fit restricted to ``theta = U w``, where ``U`` is the
       orthonormal basis of the learned subspace, with
       ``lambda = ridge_scale / n`` (eq. 3.14). Without target labels the
       estimate falls back to ``sum_m nu_m theta_hat_m`` (as in Algorithm 1),
       which needs ``relevance``;
    3. Lambda on the source data with ``min(lambda_s, lambda)`` (eq. 3.3);
    4. the confidence radius with
       ``1 / effective_labels = 1 / n + sum_m nu_m^2 / n_m``. The first term
       is the within-subspace variance of the target fit, the second the
       variance the source fits pass on through the relevance (omitted when
       no relevance is given). The rule ignores the bias of a misestimated
       subspace.

    The caller chooses the data: pass the pilot labels along with the phase-2
    labels to use both.

    Parameters
    ----------
    sources : sequence of TaskData
        Labels of the M source tasks, at least one per task.
    target : TaskData or None
        Target labels; None or an empty task uses the relevance instead.
    rank : int or None
        Rank of the joint fit; None selects it by held-out likelihood.
    settings : SolverSettings, mapping or None
    relevance : array_like of shape (M,), optional
        Estimated relevance (normally `PilotResult.relevance`). When omitted,
        ``AlgorithmResult.relevance`` contains the least-squares coefficients of
        the target estimate on the source estimates, and the diagnostics
        record that.

    Returns
    -------
    AlgorithmResult

    Raises
    ------
    InsufficientDataError
        If a source task has no labels, or the target has none and no
        relevance is given (the message names the task).
    InvalidInputError
        If shapes disagree, values are invalid, or the rank is invalid.
    """
    settings = _as_settings(settings)
    tasks, dimension = _check_sources(sources)
    names = [task.name for task in tasks]
    counts = np.array([task.n for task in tasks], dtype=np.float64)
    nu = None if relevance is None else _check_relevance(relevance, names, "relevance")
    if target is not None:
        target = _check_target(target, dimension, names)
    target_labels = 0 if target is None else target.n
    if target_labels == 0 and nu is None:
        target_name = "target" if target is None else target.name
        raise InsufficientDataError(
            f"task '{target_name}' has no labels and no relevance was given to "
            "combine the source estimates instead"
        )

    # Step 1: joint fit.
    source_ridge = joint_ridge(settings, counts)
    fit, rank_record = _fit_sources(tasks, dimension, rank, source_ridge, settings)
    ridges = {"joint": source_ridge}

    # Step 2: target inside the learned subspace, or the relevance mixture.
    target_record: dict[str, Any] | None = None
    if target_labels > 0:
        target_ridge = single_task_ridge(settings, target_labels)
        ridges["target"] = target_ridge
        target_fit = fit_ridge_logistic(
            target.X,
            target.y,
            target_ridge,
            basis=fit.basis,
            tol=settings.logistic_tol,
            max_iter=settings.logistic_max_iter,
            task=target.name,
        )
        theta = target_fit.theta
        target_record = _fit_summary(target_fit)
        estimate_kind = "subspace_fit"
    else:
        theta = fit.thetas @ nu
        estimate_kind = "relevance_combination"

    # Step 3: curvature with the smallest ridge weight.
    curvature_ridge = min(ridges.values())
    curvature = curvature_matrix(tasks, fit.thetas, curvature_ridge)

    # Step 4: confidence radius.
    variance = 0.0 if nu is None else _variance_labels(nu, counts)
    if target_labels > 0:
        variance += 1.0 / target_labels
    effective = 1.0 / variance if variance > 0.0 else math.inf
    radius, radius_record = _radius(settings, effective, fit.rank)

    if nu is None:
        nu_out, *_ = np.linalg.lstsq(fit.thetas, theta, rcond=None)
        relevance_kind = "least_squares"
    else:
        nu_out = nu
        relevance_kind = "given"

    diagnostics = {
        "algorithm": "active",
        "phase": "main",
        "labels": _labels(tasks),
        "target_labels": int(target_labels),
        "source_labels_total": int(counts.sum()),
        "ridge": {**ridges, "curvature": curvature_ridge},
        "lowrank_fit": _fit_summary(fit),
        "target_fit": target_record,
        "target_estimate": estimate_kind,
        "relevance": relevance_kind,
        "rank": rank_record,
        "confidence_radius": radius_record,
        "settings": settings.to_dict(),
    }
    logger.info(
        "main fit done: tasks=%d labels=%d target_labels=%d rank=%d converged=%s "
        "estimate=%s",
        len(tasks),
        int(counts.sum()),
        target_labels,
        fit.rank,
        fit.converged,
        estimate_kind,
    )
    return AlgorithmResult(
        theta=np.asarray(theta, dtype=np.float64),
        basis=fit.basis,
        source_thetas=fit.thetas,
        relevance=np.asarray(nu_out, dtype=np.float64),
        curvature=curvature,
        confidence_radius=radius,
        rank=int(fit.rank),
        task_names=names,
        diagnostics=diagnostics,
    )
