"""Bradley-Terry (logistic) likelihood and the single-task ridge logistic MLE.

A comparison with feature difference ``x`` and label ``y`` in [0, 1] has the
log-likelihood

    l(t, y) = y log sigmoid(t) + (1 - y) log sigmoid(-t),   t = x . theta,

which for fractional ``y`` (ties, split votes) is the soft-target cross-entropy.
Every function here evaluates it through ``softplus(t) = log(1 + exp(t))`` and
``-l(t, y) = softplus(t) - y t``, which is finite for every finite ``t``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike
from scipy.special import expit

from solvers.data import TaskData, check_task
from solvers.errors import InvalidInputError

logger = logging.getLogger(__name__)

# With ridge 0 an iterate is taken as diverging once ||w|| times the RMS feature
# entry passes this bound, a logit scale no fit of real data reaches. The
# likelihood then has no maximiser (the labels are separable, or nearly so).
_DIVERGENCE_NORM = 1e6

# Maximum deviation of U^T U from the identity accepted for an orthonormal basis.
_ORTHONORMAL_TOLERANCE = 1e-6


def _as_finite_array(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} contains NaN or infinity")
    return array


def _softplus(t: np.ndarray) -> np.ndarray:
    # max(t, 0) + log1p(exp(-|t|)) is exact to rounding and was about three
    # times faster than np.logaddexp on 10^4 values (numpy 2.4).
    return np.maximum(t, 0.0) + np.log1p(np.exp(-np.abs(t)))


def _loss_and_sigmoid(t: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Return ``sum_i softplus(t_i) - y_i t_i`` and ``sigmoid(t)`` from one exp."""
    e = np.exp(-np.abs(t))
    loss = float(np.sum(np.maximum(t, 0.0) + np.log1p(e) - y * t))
    inverse = 1.0 / (1.0 + e)
    return loss, np.where(t >= 0.0, inverse, e * inverse)


def log_sigmoid(t: ArrayLike) -> np.ndarray:
    """Compute ``log(sigmoid(t))`` without overflow or loss of precision.

    Parameters
    ----------
    t : array-like of finite floats
        Logits.

    Returns
    -------
    ndarray of the same shape as ``t``, every entry <= 0.

    Raises
    ------
    InvalidInputError
        If ``t`` contains NaN or infinity.
    """
    return -_softplus(-_as_finite_array(t, "t"))


def sigmoid(t: ArrayLike) -> np.ndarray:
    """Compute the logistic function ``1 / (1 + exp(-t))`` elementwise.

    Raises
    ------
    InvalidInputError
        If ``t`` contains NaN or infinity.
    """
    return expit(_as_finite_array(t, "t"))


def sigmoid_derivative(t: ArrayLike) -> np.ndarray:
    """Compute ``mu'(t) = sigmoid(t) * sigmoid(-t)``, the Bernoulli variance at ``t``.

    Raises
    ------
    InvalidInputError
        If ``t`` contains NaN or infinity.
    """
    t = _as_finite_array(t, "t")
    return expit(t) * expit(-t)


def negative_log_likelihood(t: ArrayLike, y: ArrayLike) -> float:
    """Sum the negative log-likelihood ``sum_i -l(t_i, y_i)`` (eq. 2.3).

    Parameters
    ----------
    t : array-like of shape (n,)
        Logits ``x_i . theta``.
    y : array-like of shape (n,)
        Labels in [0, 1]; fractions are soft targets.

    Returns
    -------
    float
        ``sum_i softplus(t_i) - y_i t_i``, finite and >= 0. An empty input gives 0.

    Raises
    ------
    InvalidInputError
        If the shapes differ, an entry is NaN or infinite, or a label lies
        outside [0, 1].
    """
    t = _as_finite_array(t, "t")
    y = _as_finite_array(y, "y")
    if t.ndim != 1 or t.shape != y.shape:
        raise InvalidInputError(
            "t and y must be 1-D arrays of one length, "
            f"got shapes {t.shape} and {y.shape}"
        )
    if np.any((y < 0.0) | (y > 1.0)):
        raise InvalidInputError("labels y must lie in [0, 1]")
    return float(np.sum(_softplus(t) - y * t))


@dataclass
class LogisticFit:
    """Result of :func:`fit_ridge_logistic`.

    Attributes
    ----------
    theta : ndarray of shape (d,)
        Estimate in the full feature space (``U w`` when a basis was given).
    objective : float
        Minimised objective ``sum_i -l(x_i . theta, y_i) + ridge * n * ||theta||^2``.
    n_iter : int
        Newton iterations taken.
    converged : bool
        Whether ``gradient_norm <= tol``.
    gradient_norm : float
        Euclidean norm of the objective's gradient (with respect to ``w`` when a
        basis was given) divided by the label count ``n`` and by the RMS entry
        of the features (of ``X U`` with a basis). The division makes it, and
        so the stopping test, invariant when the features are multiplied by a
        constant.
    message : str
        Why the iteration stopped.
    """

    theta: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    gradient_norm: float
    message: str


@dataclass
class _NewtonResult:
    w: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    gradient_norm: float
    message: str
    logits: np.ndarray  # Z @ w at the returned w


def _newton_logistic(
    Z: np.ndarray,
    y: np.ndarray,
    penalty: float,
    w0: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    task: str,
) -> _NewtonResult:
    """Minimise ``sum_i softplus(z_i . w) - y_i z_i . w + penalty ||w||^2`` by Newton.

    Inputs are trusted (validated by the caller). Damped Newton: the step solves
    ``(H + delta I) p = -g`` with ``delta = 0`` unless the Cholesky factorisation
    fails, followed by Armijo backtracking. ``gradient_norm`` is
    ``||g|| / (n * rms(Z))``.
    """
    n, k = Z.shape
    # Multiplying Z by c multiplies the gradient by c at the correspondingly
    # rescaled w, so dividing by the RMS entry makes the stopping test
    # scale-free. All-zero features leave only the penalty term, measured as is.
    feature_rms = float(np.linalg.norm(Z)) / np.sqrt(max(Z.size, 1))
    if feature_rms == 0.0:
        feature_rms = 1.0
    scale = max(n, 1) * feature_rms
    hard_labels = bool(np.all((y == 0.0) | (y == 1.0)))
    signs = 2.0 * y - 1.0
    w = np.array(w0, dtype=np.float64)

    t = Z @ w
    loss, p = _loss_and_sigmoid(t, y)
    objective = loss + penalty * float(w @ w)
    message = f"reached max_iter={max_iter} before the gradient norm fell below tol"
    converged = False
    gradient_norm = np.inf
    n_iter = 0
    for n_iter in range(max_iter + 1):
        # Gradient and its stopping test.
        gradient = Z.T @ (p - y) + 2.0 * penalty * w
        gradient_norm = float(np.linalg.norm(gradient) / scale)
        if gradient_norm <= tol:
            converged = True
            message = "gradient norm below tol"
            break
        if penalty == 0.0 and n > 0:
            if hard_labels and np.min(signs * t) > 0.0:
                message = (
                    f"labels of task '{task}' are perfectly separable and ridge is 0, "
                    "so the likelihood has no maximiser; returning the last iterate "
                    "(use ridge > 0)"
                )
                break
            if np.linalg.norm(w) * feature_rms > _DIVERGENCE_NORM:
                message = (
                    f"estimate for task '{task}' diverges with ridge 0 (the labels are "
                    "nearly separable); returning the last iterate (use ridge > 0)"
                )
                break
        if n_iter == max_iter:
            break

        # Newton direction, damped only when the Hessian is numerically singular
        # (ridge 0 with collinear or too few features). If even heavy damping
        # fails, a scaled gradient step is used.
        hessian = (Z.T * (p * (1.0 - p))) @ Z
        hessian[np.diag_indices(k)] += 2.0 * penalty
        delta = 0.0
        # The floor is the smallest normal float, not a fixed scale, so that
        # tiny features are damped in proportion. A zero trace means zero
        # features and penalty, so the gradient is 0 and the loop has ended.
        reference = max(float(np.trace(hessian)) / max(k, 1), np.finfo(np.float64).tiny)
        step = -gradient / reference
        for _ in range(12):
            try:
                factor = scipy.linalg.cho_factor(
                    hessian + delta * np.eye(k), check_finite=False
                )
            except np.linalg.LinAlgError:
                delta = reference * 1e-10 if delta == 0.0 else delta * 100.0
                continue
            step = -scipy.linalg.cho_solve(factor, gradient, check_finite=False)
            break
        slope = float(gradient @ step)

        # Armijo backtracking. When the predicted decrease is below the rounding
        # error of the objective, the test cannot be decided, and the iterate is
        # inside the region where the full Newton step converges quadratically,
        # so that step is taken as is.
        rounding = 1e-13 * (1.0 + abs(objective))
        alpha = 1.0
        accepted = False
        for _ in range(60):
            w_trial = w + alpha * step
            t_trial = Z @ w_trial
            loss, p_trial = _loss_and_sigmoid(t_trial, y)
            trial = loss + penalty * float(w_trial @ w_trial)
            if trial <= objective + 1e-4 * alpha * slope or -slope <= rounding:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:
            message = "line search found no decrease (objective at machine precision)"
            break
        w, t, p, objective = w_trial, t_trial, p_trial, trial

    return _NewtonResult(w, objective, n_iter, converged, gradient_norm, message, t)


def _check_positive(value: float, name: str, task: str) -> None:
    if not np.isfinite(value) or value <= 0:
        raise InvalidInputError(f"task '{task}': {name} must be positive, got {value}")


def fit_ridge_logistic(
    X: ArrayLike,
    y: ArrayLike,
    ridge: float,
    *,
    basis: ArrayLike | None = None,
    theta0: ArrayLike | None = None,
    tol: float = 1e-8,
    max_iter: int = 200,
    task: str = "target",
) -> LogisticFit:
    """Fit the ridge-regularised logistic MLE of one task (eqs. 3.11 and 3.14).

    Minimises

        f(theta) = sum_i -l(x_i . theta, y_i) + ridge * n * ||theta||^2,

    with ``n = len(y)``, so ``ridge`` is a per-label weight (lambda). With an
    orthonormal ``basis`` U of shape (d, k), the estimate is restricted to
    ``theta = U w`` and the fit is k-dimensional. Because ``||U w|| = ||w||``,
    the penalty is the same function of theta.

    The solver is Newton's method with Armijo backtracking; each iteration forms
    the k x k (or d x d) Hessian at cost O(n k^2).

    Parameters
    ----------
    X : array-like of shape (n, d)
        Feature differences.
    y : array-like of shape (n,)
        Labels in [0, 1], fractions allowed.
    ridge : float
        Penalty weight lambda >= 0. With ``ridge = 0`` and separable labels the
        likelihood has no maximiser: the fit stops at a finite iterate and
        returns ``converged=False`` with a message saying so.
    basis : array-like of shape (d, k), optional
        Orthonormal basis of the subspace to fit in.
    theta0 : array-like of shape (d,), optional
        Starting point (projected onto the basis when one is given). Default 0.
    tol : float, default=1e-8
        Stop when the gradient norm divided by ``n`` and by the RMS feature
        entry is at most ``tol``, so rescaling ``X`` by a constant rescales
        the returned theta by its inverse (exactly so for ``ridge = 0``).
    max_iter : int, default=200
        Maximum number of Newton iterations.
    task : str, default="target"
        Task name used in error messages.

    Returns
    -------
    LogisticFit

    Raises
    ------
    InsufficientDataError
        If ``n == 0``.
    InvalidInputError
        If a shape is wrong, an entry is NaN or infinite, a label lies outside
        [0, 1], ``ridge < 0``, the basis is not orthonormal, or ``tol`` or
        ``max_iter`` is not positive.
    """
    if not np.isscalar(ridge) or not np.isfinite(ridge) or ridge < 0:
        raise InvalidInputError(
            f"task '{task}': ridge must be a finite number >= 0, got {ridge!r}"
        )
    _check_positive(tol, "tol", task)
    if int(max_iter) != max_iter or max_iter < 1:
        raise InvalidInputError(
            f"task '{task}': max_iter must be a positive integer, got {max_iter!r}"
        )
    data = check_task(TaskData(task, np.asarray(X), np.asarray(y)), min_labels=1)
    n, d = data.X.shape

    if basis is None:
        U = None
        Z = data.X
    else:
        U = _as_finite_array(basis, f"task '{task}': basis")
        if U.ndim != 2 or U.shape[0] != d or U.shape[1] < 1:
            raise InvalidInputError(
                f"task '{task}': basis must have shape ({d}, k) with k >= 1, "
                f"got {U.shape}"
            )
        deviation = np.max(np.abs(U.T @ U - np.eye(U.shape[1])))
        if deviation > _ORTHONORMAL_TOLERANCE:
            raise InvalidInputError(
                f"task '{task}': basis columns are not orthonormal "
                f"(max |U^T U - I| = {deviation:.2e})"
            )
        Z = data.X @ np.asfortranarray(U)

    if theta0 is None:
        w0 = np.zeros(Z.shape[1])
    else:
        start = _as_finite_array(theta0, f"task '{task}': theta0")
        if start.shape != (d,):
            raise InvalidInputError(
                f"task '{task}': theta0 must have shape ({d},), got {start.shape}"
            )
        w0 = start if U is None else U.T @ start

    result = _newton_logistic(
        Z, data.y, float(ridge) * n, w0, tol=tol, max_iter=int(max_iter), task=task
    )
    theta = result.w if U is None else U @ result.w
    logger.debug(
        "ridge logistic fit finished: task=%s n=%d k=%d n_iter=%d converged=%s "
        "gradient_norm=%.3g",
        task,
        n,
        Z.shape[1],
        result.n_iter,
        result.converged,
        result.gradient_norm,
    )
    return LogisticFit(
        theta=theta,
        objective=result.objective,
        n_iter=result.n_iter,
        converged=result.converged,
        gradient_norm=result.gradient_norm,
        message=result.message,
    )
