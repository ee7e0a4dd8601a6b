"""Multi-task low-rank ridge logistic MLE and held-out rank selection.

The joint fit (eqs. 3.2, 3.10 and 3.13) minimises, over Theta = [theta_1 ... theta_M]
of shape (d, M),

    F(Theta) = sum_m [ sum_i -l(x_mi . theta_m, y_mi) + ridge * n_m * ||theta_m||^2 ]

subject to rank(Theta) <= k, where l is the logistic log-likelihood of
:mod:`solvers.logistic` and n_m is task m's label count.

Method
------
1. Spectral start: fit every task alone (full d, preconditioned L-BFGS to a
   loose tolerance) and take the top-k left singular vectors of the stacked estimates.
2. Refinement by variable projection: for a basis B of shape (d, k),
   ``phi(B) = min_W F(B W)`` splits into M independent k-dimensional ridge
   logistic fits, solved by Newton on ``Z_m = X_m Q`` (Q an orthonormal basis of
   span B). ``phi`` depends only on span B and its gradient is
   ``sum_m g_m w_m^T`` with ``g_m`` the gradient of F's task-m term, so L-BFGS
   runs on B directly. It is preconditioned on the left by the Cholesky factor
   of a per-label Hessian estimate (from a row subsample) and on the right by
   rescaling B within its span (see ``_refine``).

Each evaluation of ``phi`` reads every task matrix twice (``X_m Q`` and
``X_m^T r_m``) and allocates only O(n_m k) per task. Float64 task matrices are
used in place, never concatenated or copied (other dtypes are converted once by
:func:`solvers.data.check_tasks`).

Convergence is measured by the Riemannian gradient on the manifold of rank-k
matrices: with ``G = grad F(Theta)``, Q an orthonormal basis of the column space
and V of the row space of Theta, ``P(G) = Q Q^T G + (I - Q Q^T) G V V^T``, and
``gradient_norm = ||P(G)||_F / (N s)`` with N the total label count and s the
RMS feature entry (estimated from the preconditioner's row subsample). It is
zero exactly at the stationary points of F on that manifold. Dividing by s
makes the stopping test invariant when all features are multiplied by a
constant (F is then the same function of the rescaled Theta if ridge is
rescaled by the constant's inverse square).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
from numpy.typing import ArrayLike

from solvers.data import TaskData, check_tasks
from solvers.errors import InsufficientDataError, InvalidInputError
from solvers.logistic import _loss_and_sigmoid, _newton_logistic, _softplus

logger = logging.getLogger(__name__)

# Max-abs per-label gradient tolerance of the per-task fits that seed the
# spectral start. It leaves a start error of about 1e-3 / (curvature per label),
# below the statistical error of a task with up to about 10^4 labels. The
# refinement corrects what the start leaves, so a loose start saves passes over
# the data.
_START_TOLERANCE = 1e-3
_START_MAX_ITER = 500

# Per-label gradient tolerance of the k-dimensional fits inside phi(B). The
# gradient of phi is exact only at the inner optimum, so this is kept tight.
_INNER_TOLERANCE = 1e-11

_LBFGS_MEMORY = 10

# Rows per block in X_m @ Q (see _project_rows): 1 MiB of float64 at d = 128.
_ROW_BLOCK = 1024

# Rows per feature in the subsample behind the preconditioner.
_PRECONDITIONER_ROWS_PER_FEATURE = 50


@dataclass
class LowRankFit:
    """Result of :func:`fit_lowrank`.

    Attributes
    ----------
    thetas : ndarray of shape (d, M)
        Task estimates, column m for ``task_names[m]``.
    basis : ndarray of shape (d, rank)
        Orthonormal basis of the learned subspace: the left singular vectors of
        ``thetas``, largest singular value first.
    weights : ndarray of shape (rank, M)
        Coordinates ``basis.T @ thetas``, so ``thetas = basis @ weights``.
    objective : float
        Minimised objective F (sum over tasks, not averaged).
    n_iter : int
        Refinement iterations (L-BFGS steps over the basis); for an
        unconstrained fit, the largest per-task iteration count.
    converged : bool
        Whether ``gradient_norm <= tol``.
    gradient_norm : float
        Frobenius norm of the Riemannian gradient of F on the rank-``rank``
        manifold, divided by the total label count and the RMS feature entry
        (see the module docstring).
    message : str
        Why the iteration stopped.
    task_names : list of str
        Task names in column order.
    rank : int
        Rank of the fit, ``min(requested rank, d, M)``.
    """

    thetas: np.ndarray
    basis: np.ndarray
    weights: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    gradient_norm: float
    message: str
    task_names: list[str]
    rank: int


@dataclass
class RankSelection:
    """Result of :func:`select_rank`.

    Attributes
    ----------
    rank : int
        Chosen rank.
    candidates : list of int
        Candidate ranks, sorted ascending.
    heldout_log_likelihood : list of float
        Mean held-out log-likelihood per label for each candidate (higher is
        better); every label is held out exactly once across the folds.
    n_folds : int
        Number of cross-validation folds.
    message : str
        The rule applied and the resulting choice.
    standard_errors : list of float
        Standard error of each candidate's mean per-label difference to the
        best candidate (0 for the best itself).
    """

    rank: int
    candidates: list[int]
    heldout_log_likelihood: list[float]
    n_folds: int
    message: str
    standard_errors: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Per-task pieces


def _task_value_gradient(
    X: np.ndarray, y: np.ndarray, theta: np.ndarray, penalty: float
) -> tuple[float, np.ndarray]:
    t = X @ theta
    loss, p = _loss_and_sigmoid(t, y)
    value = loss + penalty * float(theta @ theta)
    gradient = X.T @ (p - y) + 2.0 * penalty * theta
    return value, gradient


def _fit_task_lbfgs(
    task: TaskData,
    ridge: float,
    theta0: np.ndarray,
    gtol: float,
    max_iter: int,
    factor: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Fit one task in full d by preconditioned L-BFGS on the objective over n.

    The iteration runs on ``v = L^T theta``, with ``L`` the lower Cholesky
    ``factor`` of an estimate of the per-label Hessian, so that badly scaled or
    correlated features do not slow it down. It stops when the max-abs gradient
    of the mean objective with respect to theta is at most ``gtol``, after
    ``max_iter`` iterations, or when the line search finds no decrease.
    """
    n = task.n
    penalty = ridge * n

    inverse = _inverse_factor(factor)

    def evaluate(v: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        theta = inverse.T @ v
        value, gradient = _task_value_gradient(task.X, task.y, theta, penalty)
        return theta, value / n, gradient / n

    v = factor.T @ theta0
    theta, value, gradient = evaluate(v)
    gradient_v = inverse @ gradient
    memory: list[tuple[np.ndarray, np.ndarray]] = []
    n_iter = 0
    for n_iter in range(max_iter + 1):
        if np.max(np.abs(gradient)) <= gtol or n_iter == max_iter:
            break
        direction = _lbfgs_direction(gradient_v, memory) if memory else -gradient_v
        slope = float(gradient_v @ direction)
        if slope >= 0.0:
            memory.clear()
            direction = -gradient_v
            slope = -float(gradient_v @ gradient_v)
        alpha = 1.0
        for _ in range(40):
            v_trial = v + alpha * direction
            theta_trial, value_trial, gradient_trial = evaluate(v_trial)
            if value_trial <= value + 1e-4 * alpha * slope:
                break
            alpha *= 0.5
        else:
            break
        gradient_v_trial = inverse @ gradient_trial
        s = v_trial - v
        y = gradient_v_trial - gradient_v
        if s @ y > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
            memory.append((s, y))
            if len(memory) > _LBFGS_MEMORY:
                memory.pop(0)
        v, theta, value = v_trial, theta_trial, value_trial
        gradient, gradient_v = gradient_trial, gradient_v_trial
    return theta, n_iter


def _inverse_factor(factor: np.ndarray) -> np.ndarray:
    # An explicit inverse of the d x d triangular factor (LAPACK dtrtri), because
    # scipy.linalg.solve_triangular (scipy 1.17) cost milliseconds per call in
    # profiles of this module, far more than the product with the inverse.
    inverse, info = scipy.linalg.lapack.dtrtri(factor, lower=1)
    if info != 0:
        # Unreachable for finite features: the diagonal floor keeps L invertible.
        raise InvalidInputError("the preconditioner of the features is singular")
    return np.tril(inverse)


def _hessian_factor(
    tasks: list[TaskData], ridge: float, d: int
) -> tuple[np.ndarray, float]:
    """Cholesky factor L of a per-label Hessian estimate ``E[x x^T] / 4 + 2 ridge I``.

    The second moment comes from an evenly strided subsample of about
    ``_PRECONDITIONER_ROWS_PER_FEATURE * d`` rows (slices are views, so no task
    matrix is copied); 1/4 is the logistic curvature at logit 0. The diagonal
    is floored at 1e-8 of its mean so that L stays well defined when features
    are collinear. Also returns the RMS feature entry ``sqrt(trace E[x x^T] / d)``
    of the subsample, or 1.0 when every sampled feature is 0.
    """
    total = sum(task.n for task in tasks)
    stride = max(1, total // (_PRECONDITIONER_ROWS_PER_FEATURE * d))
    moment = np.zeros((d, d))
    rows = 0
    for task in tasks:
        sample = task.X[::stride]
        moment += sample.T @ sample
        rows += sample.shape[0]
    second_moment = moment / max(rows, 1)
    feature_rms = float(np.sqrt(np.trace(second_moment) / d))
    if feature_rms == 0.0:
        feature_rms = 1.0
    hessian = 0.25 * second_moment
    floor = max(2.0 * ridge, 1e-8 * float(np.trace(hessian)) / d, 1e-300)
    hessian[np.diag_indices(d)] += floor
    return np.linalg.cholesky(hessian), feature_rms


# ---------------------------------------------------------------------------
# Variable projection phi(B) = min_W F(B W)


def _project_rows(X: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Return ``X @ Q`` in Fortran order, computed in blocks of rows.

    For a narrow Q (k of about 5) a single product made OpenBLAS 0.3.31 pack
    all of X first, which took up to five times as long as one pass over X.
    Blocks of ``_ROW_BLOCK`` rows keep each packed block in cache. Fortran
    order speeds up the Hessian products ``(Z.T * weights) @ Z`` that follow.
    """
    Z = np.empty((X.shape[0], Q.shape[1]), order="F")
    for start in range(0, X.shape[0], _ROW_BLOCK):
        stop = start + _ROW_BLOCK
        np.matmul(X[start:stop], Q, out=Z[start:stop])
    return Z


@dataclass
class _Point:
    """phi at one basis B, with everything the gradient and the result need."""

    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    W: np.ndarray  # optimal coordinates in the Q basis, shape (k, M)
    value: float  # F(Q W)
    inner_converged: bool
    logits: list[np.ndarray]  # X_m theta_m per task, kept to save a pass
    gradient: np.ndarray | None = None  # d phi / d B, shape (d, k)
    task_gradients: np.ndarray | None = None  # G = grad F(Q W), shape (d, M)


class _Profile:
    def __init__(self, tasks: list[TaskData], ridge: float, max_inner: int) -> None:
        self.tasks = tasks
        self.ridge = ridge
        self.max_inner = max_inner

    def value(self, B: np.ndarray, theta_warm: np.ndarray) -> _Point:
        """Solve the M inner k-dimensional fits at span B, warm-started at Theta."""
        Q, R = np.linalg.qr(B)
        k = Q.shape[1]
        W = np.empty((k, len(self.tasks)))
        Q_columns = np.asfortranarray(Q)
        total = 0.0
        inner_converged = True
        logits = []
        for m, task in enumerate(self.tasks):
            Z = _project_rows(task.X, Q_columns)
            result = _newton_logistic(
                Z,
                task.y,
                self.ridge * task.n,
                Q.T @ theta_warm[:, m],
                tol=_INNER_TOLERANCE,
                max_iter=self.max_inner,
                task=task.name,
            )
            W[:, m] = result.w
            logits.append(result.logits)
            total += result.objective
            inner_converged = inner_converged and result.converged
        return _Point(B, Q, R, W, total, inner_converged, logits)

    def add_gradient(self, point: _Point) -> None:
        """Fill in grad F at Theta = Q W and d phi / d B = G W_B^T."""
        Theta = point.Q @ point.W
        G = np.empty_like(Theta)
        for m, task in enumerate(self.tasks):
            _, p = _loss_and_sigmoid(point.logits[m], task.y)
            G[:, m] = task.X.T @ (p - task.y) + 2.0 * self.ridge * task.n * Theta[:, m]
        # Theta = B R^{-1} W, so the coordinates of Theta in the B basis are
        # W_B = R^{-1} W and d phi / d B = G W_B^T.
        W_B = np.linalg.solve(point.R, point.W)
        point.task_gradients = G
        point.gradient = G @ W_B.T


def _riemannian_gradient_norm(
    Q: np.ndarray, W: np.ndarray, G: np.ndarray, total: float
) -> float:
    """Norm of the projection of G onto the tangent space at Theta = Q W, over total."""
    _, _, Vt = np.linalg.svd(W, full_matrices=False)
    in_span = Q.T @ G
    outside = G - Q @ in_span
    squared = np.sum(in_span**2) + np.sum((outside @ Vt.T) ** 2)
    return float(np.sqrt(squared) / total)


def _lbfgs_direction(
    gradient: np.ndarray, memory: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Two-loop recursion: approximate -H^{-1} gradient from the (s, y) pairs."""
    q = gradient.copy()
    alphas = []
    for s, y in reversed(memory):
        alpha = np.vdot(s, q) / np.vdot(y, s)
        q -= alpha * y
        alphas.append(alpha)
    s, y = memory[-1]
    q *= np.vdot(s, y) / np.vdot(y, y)
    for (s, y), alpha in zip(memory, reversed(alphas), strict=True):
        beta = np.vdot(y, q) / np.vdot(y, s)
        q += (alpha - beta) * s
    return -q


# ---------------------------------------------------------------------------
# Public API


def _is_positive_integer(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return value >= 1
    return isinstance(value, (float, np.floating)) and value.is_integer() and value >= 1


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _validate_common(ridge: float, tol: float, max_iter: int) -> None:
    if not np.isscalar(ridge) or not np.isfinite(ridge) or ridge <= 0:
        raise InvalidInputError(
            f"ridge must be a finite number > 0, got {ridge!r}; without a ridge a "
            "task with separable labels has no maximum-likelihood estimate"
        )
    if not np.isscalar(tol) or not np.isfinite(tol) or tol <= 0:
        raise InvalidInputError(f"tol must be positive, got {tol!r}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise InvalidInputError(
            f"max_iter must be a positive integer, got {max_iter!r}"
        )


def _initial_basis(
    init: str | ArrayLike,
    tasks: list[TaskData],
    ridge: float,
    d: int,
    k: int,
    factor: np.ndarray,
    feature_rms: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return a starting basis (d, k) and per-task estimates to warm-start from."""
    zeros = np.zeros((d, len(tasks)))
    if isinstance(init, str):
        if init == "spectral":
            thetas = np.column_stack(
                [
                    _fit_task_lbfgs(
                        task,
                        ridge,
                        np.zeros(d),
                        _START_TOLERANCE * feature_rms,
                        _START_MAX_ITER,
                        factor,
                    )[0]
                    for task in tasks
                ]
            )
            U, _, _ = np.linalg.svd(thetas, full_matrices=False)
            return U[:, :k], thetas
        if init == "random":
            rng = np.random.default_rng(0)
            return np.linalg.qr(rng.standard_normal((d, k)))[0], zeros
        raise InvalidInputError(
            f"init must be 'spectral', 'random' or an array of shape ({d}, {k}), "
            f"got {init!r}"
        )
    B = np.asarray(init, dtype=np.float64)
    if B.shape != (d, k) or not np.all(np.isfinite(B)):
        raise InvalidInputError(
            f"initial basis must be a finite array of shape ({d}, {k}), got {B.shape}"
        )
    singular = np.linalg.svd(B, compute_uv=False)
    if singular[-1] <= 1e-10 * max(singular[0], 1e-300):
        raise InvalidInputError(f"initial basis of shape {B.shape} is rank deficient")
    return np.linalg.qr(B)[0], zeros


def _fit_unconstrained(
    tasks: list[TaskData],
    ridge: float,
    tol: float,
    max_iter: int,
    d: int,
    factor: np.ndarray,
    feature_rms: float,
) -> tuple[np.ndarray, float, int, np.ndarray]:
    """Fit every task alone; return Theta, F(Theta), max iterations and grad F."""
    thetas = np.empty((d, len(tasks)))
    G = np.empty_like(thetas)
    objective = 0.0
    n_iter = 0
    # gtol bounds each task's max-abs gradient of F_m / n_m, so this choice
    # keeps ||G||_F / (N feature_rms) below tol.
    gtol = tol * feature_rms / np.sqrt(d)
    for m, task in enumerate(tasks):
        thetas[:, m], iterations = _fit_task_lbfgs(
            task, ridge, np.zeros(d), gtol, max_iter, factor
        )
        value, G[:, m] = _task_value_gradient(
            task.X, task.y, thetas[:, m], ridge * task.n
        )
        objective += value
        n_iter = max(n_iter, iterations)
    return thetas, objective, n_iter, G


def fit_lowrank(
    tasks: Iterable[TaskData],
    rank: int,
    ridge: float,
    *,
    tol: float = 1e-6,
    max_iter: int = 500,
    init: str | ArrayLike = "spectral",
) -> LowRankFit:
    """Fit all tasks jointly under a rank constraint (eqs. 3.2, 3.10, 3.13).

    Minimises

        F(Theta) = sum_m [ sum_i -l(x_mi . theta_m, y_mi)
                           + ridge * n_m * ||theta_m||^2 ]

    over Theta of shape (d, M) with rank(Theta) <= rank. ``ridge`` is the
    per-label weight lambda, so each task's penalty grows with its label count
    n_m. The problem is non-convex: the result is a stationary point reached
    from the spectral start (see the module docstring for the method and the
    definition of ``gradient_norm``).

    When ``rank >= min(d, M)`` the constraint is inactive and every task is fit
    alone.

    Parameters
    ----------
    tasks : iterable of TaskData, length M
        Source tasks with unique names and one feature dimension d, read once
        (a generator works). Each task
        needs at least one label, because a task without labels has no
        estimate (its objective term is 0 for every theta_m).
    rank : int
        Maximum rank k >= 1.
    ridge : float
        Penalty weight lambda > 0.
    tol : float, default=1e-6
        Stop when ``gradient_norm <= tol``.
    max_iter : int, default=500
        Maximum refinement iterations (per-task L-BFGS iterations for an
        unconstrained fit).
    init : {"spectral", "random"} or array-like of shape (d, rank), default="spectral"
        Starting basis. "random" draws a Gaussian basis with seed 0; an array is
        used as given (its column span matters, not its scaling).

    Returns
    -------
    LowRankFit

    Raises
    ------
    InsufficientDataError
        If a task has no labels (the message names it).
    InvalidInputError
        If the tasks are invalid (see :func:`solvers.data.check_tasks`), the
        rank is not a positive integer, ``ridge <= 0``, or ``tol``, ``max_iter``
        or ``init`` is invalid.
    """
    _validate_common(ridge, tol, max_iter)
    if not _is_positive_integer(rank):
        raise InvalidInputError(f"rank must be a positive integer, got {rank!r}")
    checked, d = check_tasks(tasks, min_labels=1)
    names = [task.name for task in checked]
    n_tasks = len(checked)
    total = sum(task.n for task in checked)
    k = int(min(rank, d, n_tasks))
    ridge = float(ridge)

    factor, feature_rms = _hessian_factor(checked, ridge, d)
    if k == min(d, n_tasks):
        thetas, objective, n_iter, G = _fit_unconstrained(
            checked, ridge, tol, int(max_iter), d, factor, feature_rms
        )
        # The rank-k manifold with k = min(d, M) is open, so the tangent space is
        # everything and the Riemannian gradient is G itself.
        gradient_norm = float(np.linalg.norm(G) / (total * feature_rms))
        converged = gradient_norm <= tol
        message = f"rank {rank} >= min(d, M) = {k}: tasks fit independently; " + (
            "gradient norm below tol" if converged else "gradient norm above tol"
        )
    else:
        B, theta_warm = _initial_basis(init, checked, ridge, d, k, factor, feature_rms)
        thetas, objective, n_iter, converged, gradient_norm, message = _refine(
            checked,
            ridge,
            B,
            theta_warm,
            factor,
            tol,
            int(max_iter),
            total,
            feature_rms,
        )

    U, _, _ = np.linalg.svd(thetas, full_matrices=False)
    basis = U[:, :k]
    weights = basis.T @ thetas
    logger.info(
        "lowrank fit finished: tasks=%d labels=%d d=%d rank=%d n_iter=%d "
        "converged=%s gradient_norm=%.3g",
        n_tasks,
        total,
        d,
        k,
        n_iter,
        converged,
        gradient_norm,
    )
    return LowRankFit(
        thetas=thetas,
        basis=basis,
        weights=weights,
        objective=float(objective),
        n_iter=n_iter,
        converged=converged,
        gradient_norm=gradient_norm,
        message=message,
        task_names=names,
        rank=k,
    )


def _refine(
    tasks: list[TaskData],
    ridge: float,
    B: np.ndarray,
    theta_warm: np.ndarray,
    factor: np.ndarray,
    tol: float,
    max_iter: int,
    total: int,
    feature_rms: float,
) -> tuple[np.ndarray, float, int, bool, float, str]:
    """Minimise phi(B) by preconditioned L-BFGS with Armijo backtracking.

    Near the optimum the Hessian of phi/N with respect to B is roughly
    ``K (x) H``, with ``K = sum_m (n_m / N) w_m w_m^T`` and H the per-label
    Hessian of one task. Two changes of variables make it close to the
    identity. On the right, B is rescaled within its span so that K = I at the
    start; phi depends only on span B, so this costs nothing. On the left, the
    iteration runs on ``C = L^T B`` with ``L`` the Cholesky ``factor`` of H.
    """
    shares = np.array([task.n for task in tasks], dtype=np.float64) / total
    profile = _Profile(tasks, ridge, max_inner=100)

    # Right scaling: with W the optimal coordinates in an orthonormal basis Q,
    # B = Q K^{1/2} has coordinates K^{-1/2} W, whose weighted Gram matrix is I.
    # The span is unchanged, so the new point follows without another pass.
    point = profile.value(B, theta_warm)
    gram = (point.W * shares) @ point.W.T
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    eigenvalues = np.maximum(eigenvalues, 1e-6 * max(eigenvalues.max(), 1e-12))
    root = (eigenvectors * np.sqrt(eigenvalues)) @ eigenvectors.T
    B = point.Q @ root
    Q, R = np.linalg.qr(B)
    W = (Q.T @ point.Q) @ point.W
    point = _Point(B, Q, R, W, point.value, point.inner_converged, point.logits)
    profile.add_gradient(point)

    inverse = _inverse_factor(factor)

    def to_basis(C: np.ndarray) -> np.ndarray:
        return inverse.T @ C

    def gradient_in_c(candidate: _Point) -> np.ndarray:
        return inverse @ (candidate.gradient / total)

    C = factor.T @ point.B
    gradient = gradient_in_c(point)
    memory: list[tuple[np.ndarray, np.ndarray]] = []
    message = f"reached max_iter={max_iter} before the gradient norm fell below tol"
    converged = False
    n_iter = 0
    for n_iter in range(max_iter + 1):
        gradient_norm = _riemannian_gradient_norm(
            point.Q, point.W, point.task_gradients, total * feature_rms
        )
        if gradient_norm <= tol:
            converged = True
            message = "gradient norm below tol"
            break
        if n_iter == max_iter:
            break

        # Search direction. Without curvature pairs yet, the preconditioned
        # gradient is used as is: its unit step is a Newton step when the
        # Hessian model above is exact.
        direction = _lbfgs_direction(gradient, memory) if memory else -gradient
        slope = float(np.vdot(gradient, direction))
        if slope >= 0.0:
            memory.clear()
            direction = -gradient
            slope = -float(np.vdot(gradient, gradient))

        # Armijo backtracking; the gradient is computed only at the accepted point.
        value = point.value / total
        theta_warm = point.Q @ point.W
        alpha = 1.0
        trial = None
        for _ in range(40):
            C_trial = C + alpha * direction
            candidate = profile.value(to_basis(C_trial), theta_warm)
            if candidate.value / total <= value + 1e-4 * alpha * slope:
                trial = candidate
                break
            alpha *= 0.5
        if trial is None:
            message = "line search found no decrease (objective at machine precision)"
            break
        profile.add_gradient(trial)
        gradient_trial = gradient_in_c(trial)

        s = C_trial - C
        y = gradient_trial - gradient
        if np.vdot(s, y) > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
            memory.append((s, y))
            if len(memory) > _LBFGS_MEMORY:
                memory.pop(0)
        point, C, gradient = trial, C_trial, gradient_trial

    if not point.inner_converged:
        message += "; some per-task inner fits did not reach their tolerance"
    thetas = point.Q @ point.W
    return thetas, point.value, n_iter, converged, gradient_norm, message


def select_rank(
    tasks: Iterable[TaskData],
    candidates: Sequence[int],
    ridge: float,
    *,
    n_folds: int = 3,
    seed: int = 0,
) -> RankSelection:
    """Choose the rank by K-fold held-out log-likelihood.

    Each task's labels are split at random (``seed``) into ``n_folds`` folds of
    near-equal size. For every fold and candidate rank, :func:`fit_lowrank` is
    fit on the other folds and the log-likelihood ``l(x . theta_m, y)`` of every
    held-out label is recorded, so each label is scored once per candidate.

    Rule: let r* be the candidate with the largest mean held-out log-likelihood
    per label. The chosen rank is the smallest candidate whose mean is within
    one standard error of r*'s, the standard error being that of the per-label
    paired differences ``l_i(r) - l_i(r*)``. The paired error is used because
    both candidates are scored on the same labels, which removes most of the
    label-to-label variance.

    Parameters
    ----------
    tasks : iterable of TaskData
        Tasks as for :func:`fit_lowrank`, read once. Each needs at least
        ``n_folds`` labels so that every training split keeps a label of every
        task.
    candidates : sequence of int
        Candidate ranks (positive integers, duplicates removed).
    ridge : float
        Penalty weight lambda > 0, as in :func:`fit_lowrank`.
    n_folds : int, default=3
        Number of folds, at least 2.
    seed : int, default=0
        Seed of the fold assignment, an integer >= 0.

    Returns
    -------
    RankSelection

    Raises
    ------
    InsufficientDataError
        If a task has fewer than ``n_folds`` labels.
    InvalidInputError
        If the candidates are empty or not positive integers, ``n_folds < 2``,
        ``seed`` is not an integer >= 0, or the tasks or ridge are invalid.

    Notes
    -----
    Training splits are copies of the task rows (about (K-1)/K of the feature
    matrix at a time), unlike :func:`fit_lowrank` itself.
    """
    if not _is_positive_integer(n_folds) or n_folds < 2:
        raise InvalidInputError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    seed = _check_seed(seed)
    n_folds = int(n_folds)
    try:
        candidates = list(candidates)
    except TypeError as error:
        raise InvalidInputError(
            f"candidates must be an iterable of positive integers, got {candidates!r}"
        ) from error
    if not candidates or not all(_is_positive_integer(r) for r in candidates):
        raise InvalidInputError(
            f"candidates must be a non-empty list of positive integers, got "
            f"{candidates!r}"
        )
    ranks = sorted({int(r) for r in candidates})
    _validate_common(ridge, 1.0, 1)
    checked, _ = check_tasks(tasks, min_labels=1)
    for task in checked:
        if task.n < n_folds:
            raise InsufficientDataError(
                f"task '{task.name}' has {task.n} labels, at least n_folds={n_folds} "
                "are needed for rank selection"
            )

    # Fold assignment: a random permutation per task, cut into n_folds parts.
    rng = np.random.default_rng(seed)
    folds = []
    for task in checked:
        assignment = np.empty(task.n, dtype=np.int64)
        assignment[rng.permutation(task.n)] = np.arange(task.n) % n_folds
        folds.append(assignment)

    total = sum(task.n for task in checked)
    scores = np.zeros((len(ranks), total))
    offsets = np.cumsum([0] + [task.n for task in checked])
    for fold in range(n_folds):
        train = [
            TaskData(task.name, task.X[assignment != fold], task.y[assignment != fold])
            for task, assignment in zip(checked, folds, strict=True)
        ]
        for index, rank in enumerate(ranks):
            fit = fit_lowrank(train, rank, ridge)
            for m, (task, assignment) in enumerate(zip(checked, folds, strict=True)):
                held_out = np.flatnonzero(assignment == fold)
                t = task.X[held_out] @ fit.thetas[:, m]
                scores[index, offsets[m] + held_out] = task.y[held_out] * t - _softplus(
                    t
                )

    means = scores.mean(axis=1)
    best = int(np.argmax(means))
    differences = scores - scores[best]
    errors = (
        differences.std(axis=1, ddof=1) / np.sqrt(total) if total > 1 else 0 * means
    )
    chosen_index = next(
        i for i in range(len(ranks)) if means[i] >= means[best] - errors[i]
    )
    chosen = ranks[chosen_index]
    message = (
        f"rank {chosen}: smallest candidate within one paired standard error of the "
        f"best held-out log-likelihood (rank {ranks[best]}, "
        f"{means[best]:.6f} per label, {n_folds} folds)"
    )
    logger.info(
        "rank selection finished: candidates=%s chosen=%d best=%d",
        ranks,
        chosen,
        ranks[best],
    )
    return RankSelection(
        rank=chosen,
        candidates=ranks,
        heldout_log_likelihood=[float(v) for v in means],
        n_folds=n_folds,
        message=message,
        standard_errors=[float(v) for v in errors],
    )
