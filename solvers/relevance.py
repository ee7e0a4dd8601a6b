"""Curvature matrix and task relevance estimate (eqs. 3.3 and 3.12).

The relevance estimate is the Lasso

``nu_hat = argmin_nu 1/2 ||Theta nu - theta||_Lambda^2 + beta ||nu||_1``
subject to ``sum_m nu_m^2 / |nu0_m| <= R``,

an M-dimensional problem: a convex quadratic plus an l1 penalty over an
axis-aligned ellipsoid. :func:`solve_relevance_lasso` solves it by FISTA with
the exact proximal operator of the penalty plus the ellipsoid indicator, and
finishes with an exact solve of the optimality conditions on the support
that FISTA found.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from solvers.data import TaskData, check_tasks
from solvers.errors import InsufficientDataError, InvalidInputError
from solvers.logistic import sigmoid_derivative

logger = logging.getLogger(__name__)

# Rows of one task that curvature_matrix processes at a time, which bounds the
# extra memory to this many rows times d floats.
_CURVATURE_CHUNK_ROWS = 65_536

# Relative slack under which the ellipsoid constraint counts as active when
# the multiplier is estimated from an iterate.
_ACTIVE_SLACK = 1e-9


def curvature_matrix(
    tasks: Sequence[TaskData], thetas: np.ndarray, ridge: float
) -> np.ndarray:
    """Compute the curvature matrix Lambda of the joint fit (eq. 3.3).

    ``Lambda = (1/N) sum_m sum_i mu'(x_mi . theta_m) x_mi x_mi^T + ridge * I``,

    where ``mu'(t) = sigmoid(t) sigmoid(-t)`` is the logistic variance and
    ``N`` the total label count. It estimates the per-label Fisher information
    plus the ridge term. Each task contributes ``X_m^T (w_m * X_m)``, computed
    in row blocks, so no per-row outer product is formed.

    Parameters
    ----------
    tasks : sequence of TaskData
        Comparisons of each task; all share the dimension d.
    thetas : ndarray of shape (d, M)
        Parameter estimate of each task, column m for ``tasks[m]``.
    ridge : float
        Non-negative ridge weight added to the diagonal. Where several ridge
        weights are in play, the method uses the smallest of them.

    Returns
    -------
    ndarray of shape (d, d)
        Symmetric positive semi-definite matrix, positive definite when
        ``ridge > 0``.

    Raises
    ------
    InvalidInputError
        If a task is invalid, ``thetas`` has the wrong shape or a non-finite
        entry, ``ridge`` is negative or not finite, or the matrix overflows
        (features too large to square in float64).
    InsufficientDataError
        If no task has any label.
    """
    checked, dimension = check_tasks(tasks)
    thetas = _check_matrix(thetas, "thetas", (dimension, len(checked)))
    ridge = _check_nonnegative(ridge, "ridge")

    total_labels = sum(task.n for task in checked)
    if total_labels == 0:
        names = ", ".join(f"'{task.name}'" for task in checked)
        raise InsufficientDataError(f"tasks {names} have no labels")

    curvature = np.zeros((dimension, dimension))
    # Overflow is detected by the finiteness check below, so numpy's warning
    # is silenced here.
    with np.errstate(over="ignore", invalid="ignore"):
        for m, task in enumerate(checked):
            for start in range(0, task.n, _CURVATURE_CHUNK_ROWS):
                block = task.X[start : start + _CURVATURE_CHUNK_ROWS]
                weights = sigmoid_derivative(block @ thetas[:, m])
                curvature += block.T @ (weights[:, None] * block)
    curvature /= total_labels
    # Symmetrise away rounding so Cholesky and eigvalsh see an exact symmetric
    # matrix.
    curvature = 0.5 * (curvature + curvature.T)
    curvature[np.diag_indices(dimension)] += ridge
    if not np.all(np.isfinite(curvature)):
        names = ", ".join(f"'{task.name}'" for task in checked)
        raise InvalidInputError(
            f"curvature matrix of tasks {names} overflows to infinity or NaN; "
            "rescale the features"
        )
    return curvature


@dataclass
class LassoResult:
    """Solution of the relevance Lasso (eq. 3.12) and its certificate.

    Attributes
    ----------
    relevance : ndarray of shape (M,)
        Estimate ``nu_hat``; entries whose prior is 0 are exactly 0.
    objective : float
        ``1/2 ||Theta nu_hat - theta||_Lambda^2 + beta ||nu_hat||_1``.
    n_iter : int
        FISTA iterations used.
    converged : bool
        Whether ``optimality_gap <= tol``.
    constraint_active : bool
        Whether ``nu_hat`` lies on the ellipsoid boundary (relative slack
        below 1e-9).
    multiplier : float
        Lagrange multiplier ``mu >= 0`` of the ellipsoid constraint, 0 when it
        is inactive. It is also 0 when ``R = 0``, because no finite multiplier
        exists for the constraint ``sum nu_m^2 / |nu0_m| <= 0``.
    optimality_gap : float
        KKT stationarity residual: the largest violation over m of
        ``0 in g_m + 2 mu nu_m / |nu0_m| + beta * sign(nu_m)`` (the sign is
        the interval [-1, 1] at ``nu_m = 0``), where ``g`` is the gradient of
        the quadratic. Divided by ``||Theta^T Lambda theta||_inf`` (by 1 when
        that is 0), so the gap does not change when ``Theta`` and ``theta``
        are scaled by ``s`` and ``beta`` by ``s^2``. It is 0 when the feasible
        set is ``{0}`` (``R = 0`` or an all-zero prior), because ``nu = 0`` is
        then the exact solution.
    message : str
        How the solve ended.
    """

    relevance: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    constraint_active: bool
    multiplier: float
    optimality_gap: float
    message: str


def solve_relevance_lasso(
    source_thetas: np.ndarray,
    target_theta: np.ndarray,
    curvature: np.ndarray,
    penalty: float,
    prior: ArrayLike,
    radius: float,
    *,
    tol: float = 1e-10,
    max_iter: int = 10_000,
) -> LassoResult:
    """Estimate task relevance by the ellipsoid-constrained Lasso (eq. 3.12).

    Solves

    ``min_nu 1/2 ||Theta nu - theta||_Lambda^2 + beta ||nu||_1``
    subject to ``sum_{m: nu0_m != 0} nu_m^2 / |nu0_m| <= R``,

    with ``nu_m = 0`` forced wherever ``nu0_m = 0``. The quadratic is
    ``1/2 nu^T Q nu - c^T nu + const`` with ``Q = Theta^T Lambda Theta`` and
    ``c = Theta^T Lambda theta``. FISTA with adaptive restart takes proximal
    steps whose prox is exact: the soft threshold at ``t * beta`` followed by
    the weighted shrinkage ``x_m = s_m |nu0_m| / (|nu0_m| + kappa)``, where
    the scalar ``kappa = 2 t mu`` solves the 1-D boundary equation by Brent's
    method. Once the iterates settle, the optimality conditions restricted to
    the support and signs are solved exactly (a linear system, or a
    trust-region type 1-D equation in ``mu`` when the constraint is active).
    That point is kept when its KKT residual is smaller than ``tol``.

    Parameters
    ----------
    source_thetas : ndarray of shape (d, M)
        Source task parameters ``Theta`` (pilot estimates).
    target_theta : ndarray of shape (d,)
        Target parameter ``theta`` (pilot estimate).
    curvature : ndarray of shape (d, d)
        Symmetric positive semi-definite ``Lambda`` (eq. 3.3).
    penalty : float
        ``beta >= 0``, in the units of the quadratic term. See
        :func:`default_lasso_penalty` for a data-scaled default.
    prior : array-like of shape (M,)
        Prior relevance ``nu0``; only ``|nu0_m|`` is used.
    radius : float
        ``R >= 0``; ``math.inf`` drops the constraint. See
        :func:`default_ellipsoid_radius`.
    tol : float, default=1e-10
        Target for ``optimality_gap``.
    max_iter : int, default=10000
        Maximum number of FISTA iterations.

    Returns
    -------
    LassoResult
        The estimate and its certificate. Non-convergence is reported through
        ``converged`` and ``message`` rather than by an exception.

    Raises
    ------
    InvalidInputError
        If a shape disagrees, an entry is NaN or infinite, ``curvature`` is
        not symmetric positive semi-definite, or a scalar is out of range.
    """
    # Validate and reduce to the tasks whose prior is non-zero.
    Theta = _check_matrix(source_thetas, "source_thetas")
    dimension, n_tasks = Theta.shape
    theta = _check_vector(target_theta, "target_theta", dimension)
    Lambda = _check_curvature(curvature, dimension)
    beta = _check_nonnegative(penalty, "penalty")
    weights_all = np.abs(_check_vector(prior, "prior", n_tasks))
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.floating)):
        raise InvalidInputError(f"radius must be a number, got {radius!r}")
    radius = float(radius)
    if math.isnan(radius) or radius < 0.0:
        raise InvalidInputError(f"radius must be non-negative, got {radius}")
    tol = _check_positive(tol, "tol")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise InvalidInputError(
            f"max_iter must be a positive integer, got {max_iter!r}"
        )

    free = weights_all > 0.0
    Theta_free = Theta[:, free]
    weights = weights_all[free]
    Lambda_Theta = Lambda @ Theta_free
    Q = Theta_free.T @ Lambda_Theta
    Q = 0.5 * (Q + Q.T)
    c = Lambda_Theta.T @ theta
    # The KKT residual is measured relative to ||c||_inf, so the stopping rule
    # does not depend on the units of Theta and theta.
    scale = float(np.max(np.abs(c), initial=0.0))
    if scale == 0.0:
        scale = 1.0
    problem = _LassoProblem(Q, c, beta, weights, radius, scale)

    def finish(nu_free: np.ndarray, n_iter: int, converged: bool, message: str):
        relevance = np.zeros(n_tasks)
        relevance[free] = nu_free
        if only_zero_feasible:
            gap, multiplier, active = 0.0, 0.0, radius == 0.0 and weights.size > 0
        else:
            gap, multiplier, active = problem.kkt(nu_free)
        residual = Theta @ relevance - theta
        objective = 0.5 * float(residual @ Lambda @ residual) + beta * float(
            np.abs(relevance).sum()
        )
        if not all(math.isfinite(value) for value in (objective, gap, multiplier)):
            raise InvalidInputError(
                f"relevance Lasso overflowed (objective {objective:.3g}, KKT "
                f"residual {gap:.3g}, multiplier {multiplier:.3g}); rescale "
                "source_thetas and target_theta, or raise near-zero prior entries"
            )
        logger.info(
            "relevance_lasso.finished converged=%s n_iter=%d gap=%.3g active=%s",
            converged,
            n_iter,
            gap,
            active,
        )
        return LassoResult(
            # Adding +0.0 turns the -0.0 that soft thresholding leaves into +0.0,
            # so that a zero relevance prints and serialises as 0.0.
            relevance=relevance + 0.0,
            objective=max(objective, 0.0),
            n_iter=n_iter,
            converged=bool(converged),
            constraint_active=bool(active),
            multiplier=multiplier,
            optimality_gap=gap,
            message=message,
        )

    only_zero_feasible = weights.size == 0 or radius == 0.0
    if only_zero_feasible:
        return finish(np.zeros(weights.size), 0, True, "feasible set is {0}")

    nu, n_iter, converged, message = problem.solve(tol, max_iter)
    return finish(nu, n_iter, converged, message)


class _LassoProblem:
    """Reduced Lasso ``1/2 nu^T Q nu - c^T nu + beta ||nu||_1`` on the ellipsoid."""

    def __init__(self, Q, c, beta, weights, radius, scale):
        self.Q = Q
        self.c = c
        self.beta = beta
        self.weights = weights
        self.radius = radius
        self.scale = scale
        lipschitz = float(np.linalg.eigvalsh(Q)[-1]) if Q.size else 0.0
        # A zero quadratic has Q = 0 and c = 0, so any positive step is exact.
        self.step = 1.0 / max(lipschitz, 1e-300)

    def constraint(self, nu: np.ndarray) -> float:
        """Return ``sum nu_m^2 / w_m``."""
        return float(np.sum(nu * nu / self.weights))

    def prox(self, z: np.ndarray, step: float) -> np.ndarray:
        """Exact prox of ``step * beta ||.||_1`` plus the ellipsoid indicator."""
        shrunk = np.sign(z) * np.maximum(np.abs(z) - step * self.beta, 0.0)
        if math.isinf(self.radius) or self.constraint(shrunk) <= self.radius:
            return shrunk
        w = self.weights
        s2w = shrunk * shrunk * w

        def boundary(kappa: float) -> float:
            # The sum may overflow to inf near kappa = 0 when a weight is tiny,
            # which still has the right sign for the root search.
            with np.errstate(divide="ignore", over="ignore"):
                return float(np.sum(s2w / (w + kappa) ** 2)) - self.radius

        # boundary(0) > 0 and boundary(upper) <= 0 because
        # sum s^2 w / (w + k)^2 <= sum s^2 w / k^2.
        upper = math.sqrt(float(s2w.sum()) / self.radius) * (1.0 + 1e-12)
        kappa = _decreasing_root(boundary, 0.0, upper)
        point = shrunk * w / (w + kappa)
        excess = self.constraint(point)
        if excess > self.radius:
            point *= math.sqrt(self.radius / excess)
        return point

    def kkt(self, nu: np.ndarray) -> tuple[float, float, bool]:
        """Return the scaled KKT residual, the multiplier and constraint activity.

        The multiplier minimises the stationarity residual on the support in
        least squares, clipped at 0; it is 0 unless the constraint is active.
        """
        if nu.size == 0:
            return 0.0, 0.0, False
        gradient = self.Q @ nu - self.c
        support = nu != 0.0
        signs = np.sign(nu)
        active = not math.isinf(self.radius) and self.constraint(nu) >= self.radius * (
            1.0 - _ACTIVE_SLACK
        )
        multiplier = 0.0
        if active and np.any(support):
            a = gradient[support] + self.beta * signs[support]
            b = 2.0 * nu[support] / self.weights[support]
            multiplier = max(0.0, -float(a @ b) / float(b @ b))
        total = gradient + 2.0 * multiplier * nu / self.weights
        residual = np.where(
            support,
            np.abs(total + self.beta * signs),
            np.maximum(np.abs(total) - self.beta, 0.0),
        )
        return float(residual.max()) / self.scale, multiplier, bool(active)

    def solve(self, tol: float, max_iter: int) -> tuple[np.ndarray, int, bool, str]:
        """Run FISTA with restart, trying an exact support solve along the way."""
        x = np.zeros(self.c.size)
        y = x.copy()
        momentum = 1.0
        gap = math.inf
        polish_every = 20
        for iteration in range(1, max_iter + 1):
            # Proximal gradient step from the extrapolated point y.
            x_new = self.prox(y - self.step * (self.Q @ y - self.c), self.step)

            # Restart the momentum when it points uphill (O'Donoghue-Candes).
            if float((y - x_new) @ (x_new - x)) > 0.0:
                momentum = 1.0
                y = x_new.copy()
            else:
                next_momentum = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * momentum**2))
                y = x_new + ((momentum - 1.0) / next_momentum) * (x_new - x)
                momentum = next_momentum
            x = x_new

            gap = self.kkt(x)[0]
            if gap <= tol:
                return x, iteration, True, f"KKT residual {gap:.3g} <= tol"
            if iteration % polish_every == 0:
                polished = self.solve_on_support(x)
                if polished is not None:
                    polished_gap = self.kkt(polished)[0]
                    if polished_gap <= tol:
                        return (
                            polished,
                            iteration,
                            True,
                            "exact solve on the support, KKT residual "
                            f"{polished_gap:.3g}",
                        )
        return (
            x,
            max_iter,
            False,
            f"stopped after max_iter={max_iter} iterations with KKT residual "
            f"{gap:.3g} > tol={tol:.3g}; raise max_iter or tol",
        )

    def solve_on_support(self, nu: np.ndarray) -> np.ndarray | None:
        """Solve the KKT system for the support and signs of ``nu`` exactly.

        Returns None when the system is singular or the solution leaves the
        sign pattern or the ellipsoid.
        """
        support = np.flatnonzero(nu)
        if support.size == 0:
            return None
        signs = np.sign(nu[support])
        Q = self.Q[np.ix_(support, support)]
        rhs = self.c[support] - self.beta * signs
        sqrt_w = np.sqrt(self.weights[support])

        # In z = nu / sqrt(w) the conditions read (A + 2 mu I) z = b with
        # A = W^(1/2) Q W^(1/2) and the constraint ||z||^2 <= R.
        A = sqrt_w[:, None] * Q * sqrt_w[None, :]
        b = sqrt_w * rhs
        eigenvalues, vectors = np.linalg.eigh(A)
        coefficients = vectors.T @ b
        floor = 1e-12 * max(float(eigenvalues[-1]), 1e-300)

        def z_of(shift: float) -> np.ndarray | None:
            denominators = eigenvalues + shift
            if np.any(denominators <= floor):
                return None
            return vectors @ (coefficients / denominators)

        z = z_of(0.0)
        inside = z is not None and (
            math.isinf(self.radius) or float(z @ z) <= self.radius
        )
        if not inside:
            if math.isinf(self.radius):
                return None
            # Active constraint: find 2 mu > max(0, -lambda_min) with ||z||^2 = R.
            lower = max(0.0, -float(eigenvalues[0])) + floor

            def boundary(shift: float) -> float:
                return float(np.sum((coefficients / (eigenvalues + shift)) ** 2)) - (
                    self.radius
                )

            if boundary(lower) <= 0.0:
                return None
            upper = lower + math.sqrt(float(coefficients @ coefficients) / self.radius)
            upper = max(upper, lower) * (1.0 + 1e-12) + 1e-300
            if boundary(upper) > 0.0:
                return None
            shift = _decreasing_root(boundary, lower, upper)
            z = z_of(shift)
            if z is None:
                return None

        candidate = np.zeros_like(nu)
        candidate[support] = sqrt_w * z
        if np.any(np.sign(candidate[support]) != signs):
            return None
        value = self.constraint(candidate)
        if not math.isinf(self.radius) and value > self.radius:
            candidate *= math.sqrt(self.radius / value)
        return candidate


def _decreasing_root(function, lower: float, upper: float) -> float:
    """Find a root of a non-increasing ``function`` on ``[lower, upper]``.

    The caller guarantees ``function(lower) > 0 >= function(upper)``. Brent's
    method is tried first. When it fails, which happens when the function is
    steep over many orders of magnitude (a prior entry near 1e-300), bisection
    takes over. It bisects in log space while the bracket spans more than a
    factor of 4 and returns the upper end, where ``function <= 0``.
    """
    try:
        root = optimize.brentq(
            function, lower, upper, xtol=1e-300, rtol=1e-15, maxiter=200
        )
        if lower <= root <= upper and math.isfinite(root):
            return root
    except (RuntimeError, ValueError):
        pass
    low, high = lower, upper
    # Each step at least halves the bracket or its log-ratio, so about 2200
    # steps reach adjacent floats from any bracket inside [0, 1.8e308].
    for _ in range(4096):
        if low <= 0.0:
            middle = high * 1e-20 if high > 1e-280 else 0.5 * high
        elif high > 4.0 * low:
            middle = math.sqrt(low) * math.sqrt(high)
        else:
            middle = low + 0.5 * (high - low)
        if not low < middle < high:
            break
        if function(middle) > 0.0:
            low = middle
        else:
            high = middle
    return high


def default_lasso_penalty(
    source_thetas: np.ndarray,
    curvature: np.ndarray,
    target_labels: int,
    *,
    source_labels: ArrayLike | None = None,
    prior: ArrayLike | None = None,
    target_theta: np.ndarray | None = None,
    scale: float = 1.0,
) -> float:
    """Return the default Lasso penalty ``beta`` of eq. 3.12.

    Rule (the universal Lasso penalty):

    ``beta = scale * sqrt(2 log(2M)) * sigma * max_m ||theta_m||_Lambda``,
    ``sigma^2 = 1 / n_target + s^2 * sum_m (nu0_m / ||nu0||_1)^2 / n_m``.

    At the true relevance the gradient of the quadratic is
    ``g_m = theta_m^T Lambda e``, where ``e`` is the estimation noise of the
    pilot estimates. Lambda is the per-label Fisher information, so a fit on
    n labels has covariance about ``Lambda^-1 / n`` and ``g_m`` has standard
    deviation about ``||theta_m||_Lambda / sqrt(n)``. The source term takes
    each source fit's noise as independent and weighted by a relevance guess:
    the normalised prior times the scale
    ``s = ||theta||_Lambda / median_m ||theta_m||_Lambda``. It is used only
    when ``source_labels`` and ``target_theta`` are given. With
    ``beta`` above the largest of M such Gaussians, zero coefficients stay at
    zero with high probability. The penalty shrinks as ``1/sqrt(n)``; the
    method's own order, ``eps_theta^2 / ||nu||_1 ~ d / (n ||nu||_1)``, is a
    worst-case bound that needs the unknown ``||nu||_1``.

    Parameters
    ----------
    source_thetas : ndarray of shape (d, M)
        Pilot source estimates.
    curvature : ndarray of shape (d, d)
        ``Lambda`` (eq. 3.3).
    target_labels : int
        Number of target labels ``n_target`` behind the pilot target fit,
        at least 1.
    source_labels : array-like of shape (M,), optional
        Pilot label counts per source task, all at least 1.
    prior : array-like of shape (M,), optional
        Prior relevance; uniform when omitted.
    target_theta : ndarray of shape (d,), optional
        Pilot target estimate, used for the scale ``s``.
    scale : float, default=1.0
        Multiplier of the rule, positive.

    Returns
    -------
    float
        Finite, non-negative penalty.
    """
    Theta = _check_matrix(source_thetas, "source_thetas")
    dimension, n_tasks = Theta.shape
    Lambda = _check_curvature(curvature, dimension)
    if isinstance(target_labels, bool) or not isinstance(
        target_labels, (int, np.integer)
    ):
        raise InvalidInputError(
            f"target_labels must be an integer, got {target_labels!r}"
        )
    if target_labels < 1:
        raise InvalidInputError(
            f"target_labels must be at least 1, got {target_labels}"
        )
    scale = _check_positive(scale, "scale")

    norms = _curvature_norms(Theta, Lambda)
    variance = 1.0 / float(target_labels)
    if source_labels is not None and target_theta is not None:
        counts = _check_vector(source_labels, "source_labels", n_tasks)
        if np.any(counts < 1):
            raise InvalidInputError("source_labels must all be at least 1")
        theta = _check_vector(target_theta, "target_theta", dimension)
        if prior is None:
            guess = np.full(n_tasks, 1.0 / n_tasks)
        else:
            guess = np.abs(_check_vector(prior, "prior", n_tasks))
            total = guess.sum()
            guess = guess / total if total > 0 else np.full(n_tasks, 1.0 / n_tasks)
        relevance_scale = _relevance_scale(theta, Lambda, norms)
        variance += relevance_scale**2 * float(np.sum(guess**2 / counts))

    beta = (
        scale * math.sqrt(2.0 * math.log(2.0 * n_tasks) * variance) * float(norms.max())
    )
    return beta


def default_ellipsoid_radius(
    source_thetas: np.ndarray,
    target_theta: np.ndarray,
    curvature: np.ndarray,
    prior: ArrayLike,
    *,
    scale: float = 4.0,
) -> float:
    """Return the default ellipsoid radius ``R`` of eq. 3.12.

    Rule:

    ``R = scale * max(1, s^2) / min_{m: nu0_m != 0} |nu0_m|``, with
    ``s = ||theta||_Lambda / median_m ||theta_m||_Lambda``.

    The constraint must keep the true relevance feasible:
    ``sum nu_m^2 / |nu0_m| <= ||nu||_2^2 / min |nu0_m|``. When the sources
    are not strongly collinear, ``||theta||_Lambda^2`` is about
    ``sum nu_m^2 ||theta_m||_Lambda^2``, so ``||nu||_2`` is about ``s``. The
    default ``scale = 4`` allows ``||nu||_2`` twice that size, and
    ``max(1, .)`` keeps the set from shrinking to a point when the target is
    small. With a uniform prior ``1/M`` the rule is ``R = 4 M max(1, s^2)``.
    When every source norm is 0, ``s`` is taken as 1.

    Parameters
    ----------
    source_thetas : ndarray of shape (d, M)
        Pilot source estimates.
    target_theta : ndarray of shape (d,)
        Pilot target estimate.
    curvature : ndarray of shape (d, d)
        ``Lambda`` (eq. 3.3).
    prior : array-like of shape (M,)
        Prior relevance ``nu0`` with at least one non-zero entry.
    scale : float, default=4.0
        Multiplier of the rule, positive.

    Returns
    -------
    float
        Finite, positive radius.
    """
    Theta = _check_matrix(source_thetas, "source_thetas")
    dimension, n_tasks = Theta.shape
    theta = _check_vector(target_theta, "target_theta", dimension)
    Lambda = _check_curvature(curvature, dimension)
    weights = np.abs(_check_vector(prior, "prior", n_tasks))
    if not np.any(weights > 0):
        raise InvalidInputError("prior must have at least one non-zero entry")
    scale = _check_positive(scale, "scale")

    relevance_scale = _relevance_scale(theta, Lambda, _curvature_norms(Theta, Lambda))
    radius = scale * max(1.0, relevance_scale**2) / float(weights[weights > 0].min())
    if not math.isfinite(radius):
        raise InvalidInputError(
            "default radius overflows; pass an explicit radius or a prior "
            "without near-zero entries"
        )
    return radius


def _curvature_norms(Theta: np.ndarray, Lambda: np.ndarray) -> np.ndarray:
    """Return ``||theta_m||_Lambda`` for each column."""
    squared = np.einsum("dm,dm->m", Theta, Lambda @ Theta)
    return np.sqrt(np.maximum(squared, 0.0))


def _relevance_scale(theta: np.ndarray, Lambda: np.ndarray, norms: np.ndarray) -> float:
    """Return ``||theta||_Lambda / median ||theta_m||_Lambda`` (1 if undefined)."""
    typical = float(np.median(norms))
    if typical <= 0.0:
        return 1.0
    target_norm = math.sqrt(max(float(theta @ Lambda @ theta), 0.0))
    return target_norm / typical


def _check_matrix(
    values, name: str, shape: tuple[int, int] | None = None
) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"{name} must be an array of numbers: {error}"
        ) from None
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[0] == 0:
        raise InvalidInputError(
            f"{name} must be a non-empty 2-D array, got shape {array.shape}"
        )
    if shape is not None and array.shape != shape:
        raise InvalidInputError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} contains NaN or infinity")
    return array


def _check_vector(values, name: str, size: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"{name} must be an array of numbers: {error}"
        ) from None
    if array.shape != (size,):
        raise InvalidInputError(f"{name} must have shape ({size},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} contains NaN or infinity")
    return array


def _check_curvature(values, dimension: int) -> np.ndarray:
    Lambda = _check_matrix(values, "curvature", (dimension, dimension))
    magnitude = max(float(np.max(np.abs(Lambda))), 1e-300)
    if np.max(np.abs(Lambda - Lambda.T)) > 1e-8 * magnitude:
        raise InvalidInputError("curvature must be a symmetric matrix")
    Lambda = 0.5 * (Lambda + Lambda.T)
    smallest = float(np.linalg.eigvalsh(Lambda)[0])
    if smallest < -1e-10 * magnitude:
        raise InvalidInputError(
            "curvature must be positive semi-definite, smallest eigenvalue "
            f"{smallest:.3g}"
        )
    return Lambda


def _check_scalar(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be finite, got {value}")
    return value


def _check_nonnegative(value, name: str) -> float:
    value = _check_scalar(value, name)
    if value < 0.0:
        raise InvalidInputError(f"{name} must be non-negative, got {value}")
    return value


def _check_positive(value, name: str) -> float:
    value = _check_scalar(value, name)
    if value <= 0.0:
        raise InvalidInputError(f"{name} must be positive, got {value}")
    return value
