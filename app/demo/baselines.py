"""Baseline fits of the demo, made with the solver layer directly.

Each baseline returns a :class:`FittedModel`: a target parameter, the curvature
matrix Lambda and the confidence radius that the pessimistic policy needs, so
that its regret is measured with the same policy code as the service's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from solvers.algorithms import SolverSettings, run_main, single_task_ridge
from solvers.data import TaskData
from solvers.logistic import fit_ridge_logistic
from solvers.policy import choose_actions, confidence_radius
from solvers.relevance import curvature_matrix

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FittedModel:
    """A target estimate with what the pessimistic policy needs.

    Attributes
    ----------
    theta : ndarray of shape (d,)
        Target parameter.
    curvature : ndarray of shape (d, d)
        Curvature matrix Lambda of the fit.
    radius : float
        Confidence radius r in the Lambda norm.
    source_labels, target_labels : int
        Labels used by the fit.
    """

    theta: np.ndarray
    curvature: np.ndarray
    radius: float
    source_labels: int
    target_labels: int


def fit_single_task(
    task: TaskData,
    settings: SolverSettings,
    *,
    source_labels: int = 0,
) -> FittedModel:
    """Fit one full-d ridge logistic model, as the pilot's target fit does.

    The ridge weight is ``settings.ridge_scale / n`` for ``n`` labels, the
    single-task rule of :class:`solvers.algorithms.SolverSettings`. Lambda is
    the curvature of this one task, and the radius follows
    :func:`solvers.policy.confidence_radius` with ``n`` effective labels and
    ``d`` degrees of freedom, because the fit is not restricted to a subspace.
    ``source_labels`` only records how many of the task's labels came from
    source users (for the pooled baseline).
    """
    n = task.n
    ridge = single_task_ridge(settings, n)
    fit = fit_ridge_logistic(task.X, task.y, ridge, task=task.name)
    curvature = curvature_matrix([task], fit.theta[:, None], ridge)
    if settings.confidence_radius is not None:
        radius = float(settings.confidence_radius)
    else:
        radius = confidence_radius(
            float(n),
            task.dimension,
            confidence_level=settings.confidence_level,
            scale=settings.confidence_scale,
        )
    return FittedModel(
        theta=fit.theta,
        curvature=curvature,
        radius=radius,
        source_labels=source_labels,
        target_labels=n - source_labels,
    )


def fit_transfer(
    sources: Sequence[TaskData],
    target: TaskData,
    rank: int | None,
    settings: SolverSettings,
    relevance: np.ndarray | None = None,
) -> FittedModel:
    """Fit the sources jointly at rank k and the target inside their subspace.

    This is the service's main-phase fit (:func:`solvers.algorithms.run_main`)
    run on data that the demo collected without Active-Sample. ``relevance``
    enters only the confidence radius; passing the active run's estimate
    makes both methods apply the same radius rule to their own label counts.
    """
    result = run_main(list(sources), target, rank, settings, relevance=relevance)
    return FittedModel(
        theta=result.theta,
        curvature=result.curvature,
        radius=float(result.confidence_radius),
        source_labels=sum(task.n for task in sources),
        target_labels=target.n,
    )


def pessimistic_choices(
    model: FittedModel, contexts: Sequence[np.ndarray]
) -> np.ndarray:
    """Choose one action per context with the pessimistic batch policy.

    Same call as the service's ``POST /policy`` with mode ``pessimistic`` and
    reference ``"mean"``.
    """
    result = choose_actions(
        list(contexts),
        model.theta,
        model.curvature,
        model.radius,
        mode="pessimistic",
        references=["mean"] * len(contexts),
    )
    return np.asarray(result.actions)
