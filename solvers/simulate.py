"""Planted multi-task preference models and the measures used to evaluate estimates.

A planted instance meets the assumptions of the active multi-task RLHF method
(Assumptions 2.1-2.3 of "The Power of Active Multi-Task Learning in
Reinforcement Learning from Human Feedback"):

- every task parameter lies in one k-dimensional subspace, ``theta_m = B w_m``
  with ``B`` a d x k matrix with orthonormal columns (Assumption 2.1);
- the target parameter is a mixture of the source parameters,
  ``theta = sum_m nu_m theta_m``, with ``nu`` the task relevance;
- the feature difference ``x = phi(s, a1) - phi(s, a2)`` of every task is
  Gaussian, ``x ~ N(0, s^2 I_d)`` with one scale ``s`` (``feature_scale``), and
  every source parameter has the same norm. The Fisher information matrices
  ``E_m = E[sigmoid'(x . theta_m) x x^T]`` (eq. 2.4) are then rotations of one
  another with identical spectra, so ``C1 E <= E_m <= C2 E`` is true with
  ``C1 = 1/kappa(L)`` and ``C2 = 1`` for ``E = s^2 I / 4`` (Assumption 2.3).

Labels follow the Bradley-Terry model, ``P(y = 1 | x) = sigmoid(x . theta_m)``
(eq. 2.1). The standard deviation of the logit ``x . theta_m`` is
``s * ||theta_m||``; the constructor sets it to ``logit_std`` for every source
task and, when it draws the relevance itself, for the target as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linprog

from solvers.data import TaskData
from solvers.errors import InvalidInputError

__all__ = [
    "L1Representation",
    "PlantedInstance",
    "estimation_error",
    "make_contexts",
    "make_planted_instance",
    "min_l1_representation",
    "suboptimality",
]

TARGET = "target"

# Gauss-Hermite nodes for E[f(g)], g ~ N(0, 1); 80 nodes integrate the smooth
# functions sigmoid'(sigma g) and sigmoid'(sigma g) g^2 to machine precision for
# logit standard deviations up to about 20.
_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_HERMITE_WEIGHTS = _HERMITE_WEIGHTS / np.sqrt(2.0 * np.pi)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _sigmoid_derivative(t: np.ndarray) -> np.ndarray:
    s = _sigmoid(t)
    return s * (1.0 - s)


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


@dataclass(frozen=True)
class PlantedInstance:
    """A planted multi-task preference model (Assumptions 2.1-2.3).

    Attributes
    ----------
    basis : ndarray of shape (d, k)
        Orthonormal basis ``B`` of the shared subspace.
    source_weights : ndarray of shape (k, M)
        Coefficients ``w_m``, so that ``source_thetas = basis @ source_weights``.
    source_thetas : ndarray of shape (d, M)
        True source parameters, one column per task.
    target_theta : ndarray of shape (d,)
        True target parameter, ``source_thetas @ relevance``.
    relevance : ndarray of shape (M,)
        The planted relevance ``nu``. Other vectors may reproduce the target as
        well, because M > k columns span only k dimensions; see
        `min_l1_representation` for the one the method estimates (eq. 3.9).
    feature_scale : float
        Standard deviation ``s`` of every coordinate of a feature difference.
    seed : int
        Seed the instance was drawn with.
    source_names : list of str
        Task names used by `sample`: ``source_0`` ... ``source_{M-1}``.
    """

    basis: np.ndarray
    source_weights: np.ndarray
    source_thetas: np.ndarray
    target_theta: np.ndarray
    relevance: np.ndarray
    feature_scale: float
    seed: int
    source_names: list[str] = field(default_factory=list)

    @property
    def dimension(self) -> int:
        """Feature dimension d."""
        return int(self.basis.shape[0])

    @property
    def rank(self) -> int:
        """Dimension k of the shared subspace."""
        return int(self.basis.shape[1])

    @property
    def n_sources(self) -> int:
        """Number of source tasks M."""
        return int(self.source_thetas.shape[1])

    def theta(self, task: int | str) -> np.ndarray:
        """Return the true parameter of a source task (by index) or of ``"target"``."""
        if isinstance(task, str):
            if task == TARGET:
                return self.target_theta
            if task in self.source_names:
                return self.source_thetas[:, self.source_names.index(task)]
            raise InvalidInputError(
                f"unknown task {task!r}: expected 'target', a source name or an index"
            )
        index = int(task)
        if not 0 <= index < self.n_sources:
            raise InvalidInputError(
                f"source index {index} is out of range for {self.n_sources} sources"
            )
        return self.source_thetas[:, index]

    def task_name(self, task: int | str) -> str:
        """Return the name `sample` gives to a task."""
        if isinstance(task, str):
            self.theta(task)
            return task
        self.theta(task)
        return self.source_names[int(task)]

    def logit_std(self, task: int | str) -> float:
        """Return the standard deviation of the logit ``x . theta`` of a task."""
        return float(self.feature_scale * np.linalg.norm(self.theta(task)))

    def sample_features(
        self, n: int, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """Draw ``n`` feature differences ``x ~ N(0, s^2 I_d)``, shape (n, d)."""
        if n < 0:
            raise InvalidInputError(f"sample size must be non-negative, got {n}")
        generator = _as_generator(rng)
        return self.feature_scale * generator.standard_normal((n, self.dimension))

    def sample(
        self, task: int | str, n: int, rng: np.random.Generator | int | None = None
    ) -> TaskData:
        """Draw ``n`` labelled comparisons of one task.

        Parameters
        ----------
        task : int or str
            Source index, source name or ``"target"``.
        n : int
            Number of comparisons; 0 gives an empty task.
        rng : numpy Generator, int or None
            Random source; an int is used as a seed.

        Returns
        -------
        TaskData
            Features of shape (n, d) and labels in {0, 1} drawn with
            ``P(y = 1) = sigmoid(x . theta)`` (eq. 2.1).
        """
        theta = self.theta(task)
        generator = _as_generator(rng)
        X = self.sample_features(n, generator)
        probabilities = _sigmoid(X @ theta)
        y = (generator.random(n) < probabilities).astype(np.float64)
        return TaskData(self.task_name(task), X, y)

    def sample_sources(
        self, counts: ArrayLike, rng: np.random.Generator | int | None = None
    ) -> list[TaskData]:
        """Draw ``counts[m]`` comparisons of every source task ``m``."""
        counts = np.asarray(counts)
        if counts.shape != (self.n_sources,):
            raise InvalidInputError(
                f"expected {self.n_sources} sample sizes, got shape {counts.shape}"
            )
        generator = _as_generator(rng)
        return [
            self.sample(m, int(counts[m]), generator) for m in range(self.n_sources)
        ]

    def fisher_information(
        self,
        task: int | str = TARGET,
        *,
        ridge: float = 0.0,
        weights: ArrayLike | None = None,
    ) -> np.ndarray:
        """Compute the exact Fisher information ``E_m + ridge I`` (eq. 2.4).

        For ``x ~ N(0, s^2 I)`` and ``u = theta / ||theta||``,
        ``E[sigmoid'(x . theta) x x^T] = s^2 (a (I - u u^T) + b u u^T)`` with
        ``a = E[sigmoid'(sigma g)]``, ``b = E[sigmoid'(sigma g) g^2]``,
        ``g ~ N(0, 1)`` and ``sigma = s ||theta||``. Both expectations are
        computed by Gauss-Hermite quadrature, so the matrix is exact up to
        rounding, not a Monte Carlo estimate.

        Parameters
        ----------
        task : int, str or "sources"
            A source index or name, ``"target"``, or ``"sources"`` for the
            weighted mean of the source matrices.
        ridge : float, default=0.0
            Added to the diagonal, as in ``H = E + lambda I`` (eq. 3.3).
        weights : array_like of shape (M,), optional
            Weights of the source matrices for ``task="sources"`` (for example
            the label counts, which makes the result the population version of
            the curvature matrix Lambda of eq. 3.3). Uniform when omitted.

        Returns
        -------
        ndarray of shape (d, d)
        """
        if not np.isfinite(ridge) or ridge < 0.0:
            raise InvalidInputError(f"ridge must be a finite number >= 0, got {ridge}")
        if task == "sources":
            if weights is None:
                weight_array = np.full(self.n_sources, 1.0 / self.n_sources)
            else:
                weight_array = np.asarray(weights, dtype=np.float64)
                if weight_array.shape != (self.n_sources,) or np.any(weight_array < 0):
                    raise InvalidInputError(
                        f"weights must be {self.n_sources} non-negative numbers"
                    )
                if weight_array.sum() <= 0.0:
                    raise InvalidInputError("weights must not all be zero")
                weight_array = weight_array / weight_array.sum()
            matrix = sum(
                weight_array[m] * self._task_fisher(self.source_thetas[:, m])
                for m in range(self.n_sources)
            )
        else:
            matrix = self._task_fisher(self.theta(task))
        return matrix + ridge * np.eye(self.dimension)

    def _task_fisher(self, theta: np.ndarray) -> np.ndarray:
        norm = float(np.linalg.norm(theta))
        sigma = self.feature_scale * norm
        curvature = _sigmoid_derivative(sigma * _HERMITE_NODES)
        across = float(_HERMITE_WEIGHTS @ curvature)
        along = float(_HERMITE_WEIGHTS @ (curvature * _HERMITE_NODES**2))
        scale = self.feature_scale**2
        matrix = scale * across * np.eye(self.dimension)
        if norm > 0.0:
            u = theta / norm
            matrix += scale * (along - across) * np.outer(u, u)
        return matrix


def make_planted_instance(
    dimension: int,
    rank: int,
    n_sources: int,
    *,
    relevance: ArrayLike | None = None,
    n_relevant: int = 3,
    logit_std: float = 1.5,
    feature_scale: float = 1.0,
    seed: int = 0,
) -> PlantedInstance:
    """Draw a planted instance that meets Assumptions 2.1-2.3.

    The basis is the Q factor of a Gaussian d x k matrix. Each source weight
    ``w_m`` is a Gaussian k-vector rescaled so that ``||theta_m|| =
    logit_std / feature_scale``, which makes the logit of every source task
    have standard deviation ``logit_std``.

    Parameters
    ----------
    dimension, rank, n_sources : int
        d, k and M, with ``1 <= k <= d`` and ``M >= 1``.
    relevance : array_like of shape (M,), optional
        The relevance ``nu`` to plant, used as given. When omitted,
        ``n_relevant`` tasks are chosen at random, their entries drawn as
        random signs times Uniform(0.5, 1.5), and the vector rescaled so that
        the target logit has standard deviation ``logit_std`` as well.
    n_relevant : int, default=3
        Number of non-zero entries of a drawn relevance vector.
    logit_std : float, default=1.5
        Standard deviation of ``x . theta_m`` for every source task.
    feature_scale : float, default=1.0
        Standard deviation of every feature coordinate.
    seed : int, default=0
        Seed of the random draws, an integer >= 0.

    Returns
    -------
    PlantedInstance

    Raises
    ------
    InvalidInputError
        If a size or ``seed`` is not an integer or out of range, ``logit_std``
        or ``feature_scale`` is not a positive finite number, or ``relevance``
        has the wrong length or a non-finite entry.
    """
    for name, value in (
        ("dimension", dimension),
        ("rank", rank),
        ("n_sources", n_sources),
        ("seed", seed),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidInputError(
                f"{name} must be an integer, got {type(value).__name__} {value!r}"
            )
    if seed < 0:
        raise InvalidInputError(f"seed must be >= 0, got {seed}")
    if rank < 1 or dimension < rank:
        raise InvalidInputError(
            f"need 1 <= rank <= dimension, got rank={rank}, dimension={dimension}"
        )
    if n_sources < 1:
        raise InvalidInputError(f"need at least one source task, got {n_sources}")
    for name, value in (("logit_std", logit_std), ("feature_scale", feature_scale)):
        if not np.isfinite(value) or value <= 0.0:
            raise InvalidInputError(f"{name} must be a positive number, got {value}")
    rng = np.random.default_rng(seed)

    # Shared subspace and source parameters of equal norm.
    basis, _ = np.linalg.qr(rng.standard_normal((dimension, rank)))
    weights = rng.standard_normal((rank, n_sources))
    weights *= (logit_std / feature_scale) / np.linalg.norm(weights, axis=0)
    source_thetas = basis @ weights

    # Relevance: given, or sparse with the target logit scaled like the sources.
    if relevance is None:
        if not 1 <= n_relevant <= n_sources:
            raise InvalidInputError(
                f"n_relevant must be between 1 and {n_sources}, got {n_relevant}"
            )
        support = rng.choice(n_sources, size=n_relevant, replace=False)
        nu = np.zeros(n_sources)
        nu[support] = rng.choice([-1.0, 1.0], n_relevant) * rng.uniform(
            0.5, 1.5, n_relevant
        )
        target_norm = float(np.linalg.norm(source_thetas @ nu))
        if target_norm > 0.0:
            nu *= (logit_std / feature_scale) / target_norm
    else:
        nu = np.asarray(relevance, dtype=np.float64)
        if nu.shape != (n_sources,):
            raise InvalidInputError(
                f"relevance must have {n_sources} entries, got shape {nu.shape}"
            )
        if not np.all(np.isfinite(nu)):
            raise InvalidInputError("relevance contains NaN or infinity")
    target_theta = source_thetas @ nu

    return PlantedInstance(
        basis=basis,
        source_weights=weights,
        source_thetas=source_thetas,
        target_theta=target_theta,
        relevance=nu,
        feature_scale=float(feature_scale),
        seed=int(seed),
        source_names=[f"source_{m}" for m in range(n_sources)],
    )


def estimation_error(
    theta_hat: ArrayLike, theta_star: ArrayLike, H: ArrayLike
) -> float:
    """Return the H-norm error ``sqrt((theta_hat - theta*)^T H (theta_hat - theta*))``.

    ``H`` is a symmetric positive semi-definite (d, d) matrix, typically
    `PlantedInstance.fisher_information`. This is the norm in which the
    method's guarantees are stated (eqs. 3.3, B.2).
    """
    difference = np.asarray(theta_hat, dtype=np.float64) - np.asarray(
        theta_star, dtype=np.float64
    )
    matrix = np.asarray(H, dtype=np.float64)
    if difference.ndim != 1 or matrix.shape != (difference.size, difference.size):
        raise InvalidInputError(
            f"expected vectors of length d and a (d, d) matrix, got {difference.shape} "
            f"and {matrix.shape}"
        )
    if not (np.all(np.isfinite(difference)) and np.all(np.isfinite(matrix))):
        raise InvalidInputError("estimation_error inputs contain NaN or infinity")
    return float(np.sqrt(max(float(difference @ matrix @ difference), 0.0)))


def make_contexts(
    instance: PlantedInstance,
    n_contexts: int,
    n_actions: int | Sequence[int],
    rng: np.random.Generator | int | None = None,
    *,
    offset_scale: float = 0.0,
) -> list[np.ndarray]:
    """Draw contexts, each a matrix of action features ``phi(s, a)``.

    Action features are ``c_s + e_a`` with independent ``e_a ~ N(0, s^2 I / 2)``,
    so the difference of two actions of one context has the training
    distribution ``N(0, s^2 I)``. ``c_s ~ N(0, offset_scale^2 s^2 I)`` is a
    context-wide offset. It cancels in every comparison but moves the
    pessimism term ``||phi||_{Lambda^-1}`` unless actions are measured
    against a reference action.

    Returns
    -------
    list of ndarray
        ``n_contexts`` arrays of shape (A_s, d); ``A_s = n_actions`` or
        ``n_actions[s]``.
    """
    if n_contexts < 1:
        raise InvalidInputError(f"need at least one context, got {n_contexts}")
    counts = np.broadcast_to(np.asarray(n_actions, dtype=np.int64), (n_contexts,))
    if np.any(counts < 1):
        raise InvalidInputError("every context needs at least one action")
    if not np.isfinite(offset_scale) or offset_scale < 0.0:
        raise InvalidInputError(f"offset_scale must be >= 0, got {offset_scale}")
    generator = _as_generator(rng)
    d = instance.dimension
    scale = instance.feature_scale
    contexts = []
    for count in counts:
        offset = offset_scale * scale * generator.standard_normal(d)
        actions = scale / np.sqrt(2.0) * generator.standard_normal((int(count), d))
        contexts.append(offset + actions)
    return contexts


def suboptimality(
    chosen_actions: ArrayLike | Sequence[ArrayLike],
    contexts: Sequence[ArrayLike],
    theta_star: ArrayLike,
) -> float:
    """Return the mean regret ``E_s[max_a r*(s, a) - r*(s, pi(s))]`` over the contexts.

    ``r*(s, a) = phi(s, a) . theta*`` and each context has weight
    ``1 / n_contexts`` (the SubOpt of a policy, Section 2).

    Parameters
    ----------
    chosen_actions : array_like of int of shape (S,), or sequence of S vectors
        The action index per context, or a probability vector over that
        context's actions for a stochastic policy.
    contexts : sequence of S arrays of shape (A_s, d)
    theta_star : array_like of shape (d,)
    """
    theta = np.asarray(theta_star, dtype=np.float64)
    if len(contexts) == 0:
        raise InvalidInputError("no contexts given")
    if len(chosen_actions) != len(contexts):
        raise InvalidInputError(
            f"got {len(chosen_actions)} choices for {len(contexts)} contexts"
        )
    regrets = np.empty(len(contexts))
    for s, (choice, features) in enumerate(zip(chosen_actions, contexts, strict=True)):
        rewards = np.asarray(features, dtype=np.float64) @ theta
        choice_array = np.asarray(choice, dtype=np.float64)
        if choice_array.ndim == 0:
            index = int(choice_array)
            if index != choice_array or not 0 <= index < rewards.size:
                raise InvalidInputError(
                    f"context {s}: action {choice} is not an index below {rewards.size}"
                )
            achieved = rewards[index]
        else:
            if choice_array.shape != rewards.shape or np.any(choice_array < 0):
                raise InvalidInputError(
                    f"context {s}: expected {rewards.size} non-negative probabilities"
                )
            if not np.isclose(choice_array.sum(), 1.0, atol=1e-8):
                raise InvalidInputError(
                    f"context {s}: probabilities sum to {choice_array.sum()}, not 1"
                )
            achieved = float(choice_array @ rewards)
        regrets[s] = rewards.max() - achieved
    return float(regrets.mean())


@dataclass(frozen=True)
class L1Representation:
    """The smallest-l1 representation of a target by source parameters (eq. 3.9).

    Attributes
    ----------
    relevance : ndarray of shape (M,)
        ``argmin ||nu||_1`` subject to ``source_thetas @ nu = target``.
    l1_norm : float
        ``||relevance||_1``.
    residual : float
        ``||source_thetas @ relevance - target||_2``; near zero when the
        target lies in the span of the sources.
    support : list of int
        Indices with ``|relevance_m| > 1e-9 * max(1, l1_norm)``.
    margin : float or None
        Relative increase of the smallest l1 norm when one task of the support
        is excluded, minimised over the support tasks whose exclusion still
        leaves a representation: ``min_j l1(nu_j = 0) / l1_norm - 1``. A margin
        of 0.2 means every representation that avoids a support task costs at
        least 20% more l1 norm, so the support is well identified. A margin
        near 0 means noise can pick among near-ties. None when no support task
        can be excluded at all (the support is forced), 0.0 when the support
        is empty.
    """

    relevance: np.ndarray
    l1_norm: float
    residual: float
    support: list[int]
    margin: float | None


def _solve_min_l1(
    constraint: np.ndarray, rhs: np.ndarray, excluded: int | None = None
) -> np.ndarray | None:
    n_columns = constraint.shape[1]
    # nu = plus - minus with plus, minus >= 0; minimise sum(plus + minus).
    cost = np.ones(2 * n_columns)
    equality = np.hstack([constraint, -constraint])
    bounds = [(0.0, None)] * (2 * n_columns)
    if excluded is not None:
        bounds[excluded] = (0.0, 0.0)
        bounds[n_columns + excluded] = (0.0, 0.0)
    result = linprog(cost, A_eq=equality, b_eq=rhs, bounds=bounds, method="highs")
    if result.status != 0:
        return None
    return result.x[:n_columns] - result.x[n_columns:]


def min_l1_representation(
    source_thetas: ArrayLike, target_theta: ArrayLike, *, rtol: float = 1e-9
) -> L1Representation:
    """Find the smallest-l1 relevance that reproduces the target (eq. 3.9).

    Solves ``min ||nu||_1 s.t. Theta nu = theta`` as a linear program
    (``scipy.optimize.linprog``, HiGHS). The equality is imposed on the
    coordinates in an orthonormal basis of the column space of ``Theta``
    (singular values above ``rtol`` times the largest), which removes the
    d - k redundant rows of a rank-k ``Theta``. A target outside that column
    space is replaced by its projection, and the distance shows in
    ``residual``.

    Parameters
    ----------
    source_thetas : array_like of shape (d, M)
    target_theta : array_like of shape (d,)
    rtol : float, default=1e-9
        Relative singular-value cut-off for the column space.

    Returns
    -------
    L1Representation
    """
    thetas = np.asarray(source_thetas, dtype=np.float64)
    target = np.asarray(target_theta, dtype=np.float64)
    if thetas.ndim != 2 or target.shape != (thetas.shape[0],):
        raise InvalidInputError(
            f"expected source_thetas (d, M) and target (d,), got {thetas.shape} "
            f"and {target.shape}"
        )
    if not (np.all(np.isfinite(thetas)) and np.all(np.isfinite(target))):
        raise InvalidInputError("min_l1_representation inputs contain NaN or infinity")
    n_sources = thetas.shape[1]

    left, singular_values, _ = np.linalg.svd(thetas, full_matrices=False)
    if singular_values.size == 0 or singular_values[0] == 0.0:
        relevance = np.zeros(n_sources)
        return L1Representation(relevance, 0.0, float(np.linalg.norm(target)), [], 0.0)
    column_space = left[:, singular_values > rtol * singular_values[0]]
    constraint = column_space.T @ thetas
    rhs = column_space.T @ target

    relevance = _solve_min_l1(constraint, rhs)
    if relevance is None:
        raise InvalidInputError("the smallest-l1 linear program failed to solve")
    l1_norm = float(np.abs(relevance).sum())
    residual = float(np.linalg.norm(thetas @ relevance - target))
    support = [
        int(m) for m in np.flatnonzero(np.abs(relevance) > 1e-9 * max(1.0, l1_norm))
    ]

    # Margin: how much l1 norm a representation avoiding one support task costs.
    margin: float | None = 0.0
    if support and l1_norm > 0.0:
        increases = []
        for excluded in support:
            alternative = _solve_min_l1(constraint, rhs, excluded)
            if alternative is not None:
                increases.append(float(np.abs(alternative).sum()) / l1_norm - 1.0)
        margin = min(increases) if increases else None
    return L1Representation(relevance, l1_norm, residual, support, margin)
