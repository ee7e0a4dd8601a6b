"""Numerical core of prefbudget: active multi-task RLHF label budgeting.

Plain numpy/scipy, no web or database imports. The modules follow the steps
of the method (docs/solvers.md): ``allocation`` (eq. 3.1), ``logistic``
(eqs. 3.11, 3.14), ``lowrank`` (eqs. 3.2, 3.10, 3.13), ``relevance``
(eqs. 3.3, 3.12), ``policy`` (eqs. 3.4, 3.15), ``algorithms`` (the drivers
of Algorithms 1 and 2) and ``simulate`` (planted instances for tests and
benchmarks). Every public name is re-exported here.
"""

from solvers.algorithms import (
    AlgorithmResult,
    PilotResult,
    SolverSettings,
    joint_ridge,
    plan_quotas,
    remaining_quotas,
    run_known_relevance,
    run_main,
    run_pilot,
    single_task_ridge,
)
from solvers.allocation import active_sample, split_batch
from solvers.data import TaskData, check_task, check_tasks
from solvers.errors import InsufficientDataError, InvalidInputError, SolverError
from solvers.logistic import (
    LogisticFit,
    fit_ridge_logistic,
    log_sigmoid,
    negative_log_likelihood,
    sigmoid,
    sigmoid_derivative,
)
from solvers.lowrank import LowRankFit, RankSelection, fit_lowrank, select_rank
from solvers.policy import PolicyResult, choose_actions, confidence_radius
from solvers.relevance import (
    LassoResult,
    curvature_matrix,
    default_ellipsoid_radius,
    default_lasso_penalty,
    solve_relevance_lasso,
)
from solvers.simulate import (
    L1Representation,
    PlantedInstance,
    estimation_error,
    make_contexts,
    make_planted_instance,
    min_l1_representation,
    suboptimality,
)

__all__ = [
    "AlgorithmResult",
    "InsufficientDataError",
    "InvalidInputError",
    "L1Representation",
    "LassoResult",
    "LogisticFit",
    "LowRankFit",
    "PilotResult",
    "PlantedInstance",
    "PolicyResult",
    "RankSelection",
    "SolverError",
    "SolverSettings",
    "TaskData",
    "active_sample",
    "check_task",
    "check_tasks",
    "choose_actions",
    "confidence_radius",
    "curvature_matrix",
    "default_ellipsoid_radius",
    "default_lasso_penalty",
    "estimation_error",
    "fit_lowrank",
    "fit_ridge_logistic",
    "joint_ridge",
    "log_sigmoid",
    "make_contexts",
    "make_planted_instance",
    "min_l1_representation",
    "negative_log_likelihood",
    "plan_quotas",
    "remaining_quotas",
    "run_known_relevance",
    "run_main",
    "run_pilot",
    "select_rank",
    "sigmoid",
    "sigmoid_derivative",
    "single_task_ridge",
    "solve_relevance_lasso",
    "split_batch",
    "suboptimality",
]
