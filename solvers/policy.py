"""Confidence radius and pessimistic action choice (eqs. 3.3, 3.4 and 3.15).

The confidence set is the ellipsoid ``C = {theta' : ||theta' - theta||_Lambda <= r}``.
For features ``v`` its worst case has the closed form

``min_{theta' in C} v . theta' = v . theta - r ||v||_{Lambda^-1}``,

attained at ``theta' = theta - r Lambda^-1 v / ||v||_{Lambda^-1}``. All norms
below are computed in whitened coordinates ``z = L^-1 phi`` with the Cholesky
factor ``Lambda = L L^T``, so that ``||phi||_{Lambda^-1} = ||z||``.

Inference assumptions: the rule in :func:`confidence_radius` treats the
estimate as asymptotically normal with covariance ``Lambda^-1 / n`` inside a
k-dimensional subspace. This ignores the ridge bias, the error of the learned
subspace and the data-driven choice of the rank, so its coverage is
approximate, and worse with few labels or a large ridge weight.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, optimize, stats

from solvers.data import MAX_ABS_FEATURE
from solvers.errors import InvalidInputError

logger = logging.getLogger(__name__)

MODES = ("pessimistic", "lower_confidence_bound", "greedy")

# Bisection steps of the exact Frank-Wolfe line search: 60 halvings of [0, 1]
# reach float64 resolution.
_LINE_SEARCH_STEPS = 60

# Largest number of (context, action) pairs for which the dual problem is
# solved by SLSQP, whose dense steps cost about the cube of that count.
_MAX_DUAL_ROWS = 256


def confidence_radius(
    effective_labels: float,
    rank: int,
    confidence_level: float = 0.95,
    scale: float = 1.0,
) -> float:
    """Return the radius ``r`` of the confidence ellipsoid (eqs. 3.3, 3.15).

    Rule: ``r = scale * sqrt(chi2.ppf(confidence_level, df=rank) / effective_labels)``.

    Lambda is the per-label Fisher information, so an estimate from ``n``
    labels has ``||theta_hat - theta*||_Lambda^2`` distributed about as
    ``chi2_k / n`` when its error lies in a k-dimensional subspace. The
    ellipsoid then covers the true parameter with about the requested
    probability (see the module notes for what this ignores). For the
    known-relevance estimate ``sum_m nu_m theta_hat_m`` the error variance is
    ``sum_m nu_m^2 / n_m``, so pass ``effective_labels = 1 / sum_m nu_m^2 / n_m``.
    The method fixes only the order of the radius, ``alpha * eps``; ``scale``
    plays the part of ``alpha``.

    Parameters
    ----------
    effective_labels : float
        Positive, finite effective label count ``n``.
    rank : int
        Degrees of freedom ``k >= 1`` (the rank of the learned subspace, or d
        for a full-dimensional fit).
    confidence_level : float, default=0.95
        Coverage probability, strictly between 0 and 1.
    scale : float, default=1.0
        Non-negative multiplier; 0 gives ``r = 0`` (greedy choice).

    Returns
    -------
    float
        Finite, non-negative radius.
    """
    n = _check_real(effective_labels, "effective_labels")
    if n <= 0.0:
        raise InvalidInputError(f"effective_labels must be positive, got {n}")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise InvalidInputError(f"rank must be a positive integer, got {rank!r}")
    level = _check_real(confidence_level, "confidence_level")
    if not 0.0 < level < 1.0:
        raise InvalidInputError(
            f"confidence_level must lie strictly between 0 and 1, got {level}"
        )
    scale = _check_real(scale, "scale")
    if scale < 0.0:
        raise InvalidInputError(f"scale must be non-negative, got {scale}")

    quantile = float(stats.chi2.ppf(level, df=int(rank)))
    radius = scale * math.sqrt(quantile / n)
    if not math.isfinite(radius):
        raise InvalidInputError(
            f"confidence radius overflows for effective_labels={n}; pass a larger count"
        )
    return radius


@dataclass
class PolicyResult:
    """Chosen actions and the pessimistic value of the choice.

    Attributes
    ----------
    actions : ndarray of int64, shape (S,)
        Chosen action index per context (deterministic policy).
    estimates : ndarray of shape (S,)
        ``phi~ . theta`` of each chosen action, ``phi~`` the features after
        the reference shift.
    lower_bounds : ndarray of shape (S,)
        ``phi~ . theta - r ||phi~||_{Lambda^-1}`` of each chosen action.
    probabilities : list of ndarray
        Stochastic policy per context, shape (A_s,). For ``"pessimistic"``
        the Frank-Wolfe solution of the max-min problem; otherwise the
        one-hot vector of ``actions``.
    value : float
        Worst-case value ``min_{theta' in C} mean_s phi~_{s, a_s} . theta'`` of
        the deterministic policy ``actions``.
    stochastic_value : float
        Worst-case value of ``probabilities``.
    n_iter : int
        Frank-Wolfe iterations (0 for the other modes).
    gap : float
        Duality gap: an upper bound on the max-min optimum over stochastic
        policies minus ``stochastic_value``.
    converged : bool
        Whether ``gap <= tol * max(1, |stochastic_value|)``; always True for
        ``"greedy"`` and ``"lower_confidence_bound"``, which are closed-form
        choices.
    mode : str
        The mode that produced the result.
    message : str
        How the solve ended.
    """

    actions: np.ndarray
    estimates: np.ndarray
    lower_bounds: np.ndarray
    probabilities: list[np.ndarray]
    value: float
    stochastic_value: float
    n_iter: int
    gap: float
    converged: bool
    mode: str
    message: str = field(default="")


def choose_actions(
    contexts: Sequence[np.ndarray],
    theta: np.ndarray,
    curvature: np.ndarray,
    radius: float,
    *,
    mode: str = "pessimistic",
    references: Sequence[None | str | int] | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    max_enumerated: int = 4096,
) -> PolicyResult:
    """Choose one action per context from the estimate and its confidence set.

    Each context ``s`` offers actions with features ``phi_sa`` (rows of
    ``contexts[s]``). A reference shifts them to ``phi~_sa = phi_sa - phi_ref``;
    Bradley-Terry data identify only feature differences, so the shift
    decides what the pessimism term measures.

    Modes
    -----
    ``"greedy"``
        ``argmax_a phi~_sa . theta`` per context.
    ``"lower_confidence_bound"``
        ``argmax_a phi~_sa . theta - r ||phi~_sa||_{Lambda^-1}`` per context
        (eq. 3.4 with one context).
    ``"pessimistic"``
        The batch max-min of eqs. 3.4 and 3.15 with the contexts as the
        distribution ``rho``: maximise the concave
        ``f(v) = v . theta - r ||v||_{Lambda^-1}`` over
        ``v = mean_s sum_a p_sa phi~_sa``, ``p_s`` in the simplex. Frank-Wolfe
        with exact line search and pairwise steps solves it; its linear step
        is the per-context argmax at
        ``theta' = theta - r Lambda^-1 v / ||v||_{Lambda^-1}``, the worst case
        of the current ``v``, and the Frank-Wolfe gap there equals the duality
        gap ``mean_s max_a phi~_sa . theta' - f(v)``. Near ``v = 0``, where f
        has a kink, the dual problem is also solved directly (SLSQP) for a
        tighter bound. The deterministic policy is the best of all
        deterministic policies when there are at most ``max_enumerated``.
        Otherwise it starts from the best of four roundings (the argmax of
        the final linear step, the most likely action, the
        lower-confidence-bound choice and the greedy choice), and a local
        search switches one context at a time while the worst-case value
        rises. That is a heuristic: ``value`` and ``stochastic_value + gap``
        bracket what rounding loses.

    With ``radius = 0`` every mode reduces to the greedy choice.

    Parameters
    ----------
    contexts : sequence of ndarray of shape (A_s, d)
        Candidate features per context, ``A_s >= 1``.
    theta : ndarray of shape (d,)
        Parameter estimate.
    curvature : ndarray of shape (d, d)
        Symmetric positive definite ``Lambda`` (eq. 3.3).
    radius : float
        Non-negative, finite ``r``.
    mode : {"pessimistic", "lower_confidence_bound", "greedy"}, default="pessimistic"
    references : sequence of {None, "mean", int}, optional
        One entry per context: None for no shift, ``"mean"`` for the mean of
        that context's candidates, or the index of a candidate. Omitted means
        None for every context.
    tol : float, default=1e-6
        Relative duality-gap target of Frank-Wolfe.
    max_iter : int, default=1000
        Maximum Frank-Wolfe iterations; also bounds the local-search passes.
    max_enumerated : int, default=4096
        In ``"pessimistic"`` mode, all deterministic policies are evaluated
        and the best returned when there are at most this many
        (``prod_s A_s``); above it the rounding and local search run. 0
        always uses the rounding.

    Returns
    -------
    PolicyResult

    Raises
    ------
    InvalidInputError
        If a shape disagrees (the message names the context index), an
        entry is NaN or infinite, ``curvature`` is not symmetric positive
        definite, a reference is invalid, or a scalar is out of range.
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 1 or theta.size == 0:
        raise InvalidInputError(
            f"theta must be a non-empty 1-D array, got shape {theta.shape}"
        )
    if not np.all(np.isfinite(theta)):
        raise InvalidInputError("theta contains NaN or infinity")
    dimension = theta.size
    cholesky = _cholesky(curvature, dimension)
    radius = _check_real(radius, "radius")
    if radius < 0.0:
        raise InvalidInputError(f"radius must be non-negative, got {radius}")
    tol = _check_real(tol, "tol")
    if tol <= 0.0:
        raise InvalidInputError(f"tol must be positive, got {tol}")
    if (
        isinstance(max_iter, bool)
        or not isinstance(max_iter, numbers.Integral)
        or max_iter < 1
    ):
        raise InvalidInputError(
            f"max_iter must be a positive integer, got {max_iter!r}"
        )
    if (
        isinstance(max_enumerated, bool)
        or not isinstance(max_enumerated, numbers.Integral)
        or max_enumerated < 0
    ):
        raise InvalidInputError(
            f"max_enumerated must be a non-negative integer, got {max_enumerated!r}"
        )

    batch = _ContextBatch(contexts, references, dimension, theta, cholesky, radius)
    if radius == 0.0:
        mode_used = "greedy"
    else:
        mode_used = mode

    if mode_used == "greedy":
        actions = batch.argmax(batch.estimates)
    elif mode_used == "lower_confidence_bound":
        actions = batch.argmax(batch.lower_bounds)
    else:
        return _pessimistic(batch, mode, tol, int(max_iter), max_enumerated)

    probabilities = batch.one_hot(actions)
    stochastic_value = batch.value(actions)
    gap = batch.dual_bound(probabilities) - stochastic_value
    return batch.result(
        actions,
        [
            row[:size].copy()
            for row, size in zip(probabilities, batch.sizes, strict=True)
        ],
        stochastic_value,
        n_iter=0,
        gap=max(gap, 0.0),
        converged=True,
        mode=mode,
        message=f"closed-form {mode_used} choice",
    )


class _ContextBatch:
    """Padded, shifted and whitened features of all contexts."""

    def __init__(self, contexts, references, dimension, theta, cholesky, radius):
        if isinstance(contexts, np.ndarray) and contexts.ndim != 3:
            raise InvalidInputError(
                "contexts must be a sequence of (A_s, d) arrays, got an array of "
                f"shape {contexts.shape}"
            )
        if len(contexts) == 0:
            raise InvalidInputError("contexts must contain at least one context")
        n_contexts = len(contexts)
        if references is None:
            references = [None] * n_contexts
        elif len(references) != n_contexts:
            raise InvalidInputError(
                f"references must have one entry per context ({n_contexts}), "
                f"got {len(references)}"
            )

        sizes = []
        shifted = []
        for s, (features, reference) in enumerate(
            zip(contexts, references, strict=True)
        ):
            features = np.asarray(features, dtype=np.float64)
            if features.ndim != 2 or features.shape[0] == 0:
                raise InvalidInputError(
                    f"context {s}: features must be a non-empty (A_s, d) array, "
                    f"got shape {features.shape}"
                )
            if features.shape[1] != dimension:
                raise InvalidInputError(
                    f"context {s}: features have dimension {features.shape[1]}, "
                    f"expected {dimension}"
                )
            if not np.all(np.isfinite(features)):
                raise InvalidInputError(
                    f"context {s}: features contain NaN or infinity"
                )
            largest = float(np.max(np.abs(features)))
            if largest > MAX_ABS_FEATURE:
                raise InvalidInputError(
                    f"context {s}: feature magnitude must be at most "
                    f"{MAX_ABS_FEATURE:g}, got {largest:.3g}; rescale the features"
                )
            shifted.append(features - _reference_point(features, reference, s))
            sizes.append(features.shape[0])

        # Pad to (S, A_max, d). Padded actions get -inf scores in argmax.
        self.sizes = np.asarray(sizes)
        self.n_contexts = n_contexts
        self.radius = radius
        width = int(self.sizes.max())
        self.mask = np.arange(width)[None, :] < self.sizes[:, None]
        self.features = np.zeros((n_contexts, width, dimension))
        for s, rows in enumerate(shifted):
            self.features[s, : rows.shape[0]] = rows

        # Whitened features z = L^-1 phi~, so that ||phi~||_{Lambda^-1} = ||z||.
        flat = self.features.reshape(-1, dimension)
        whitened = linalg.solve_triangular(cholesky, flat.T, lower=True).T
        self.whitened = whitened.reshape(self.features.shape)
        self.estimates = self.features @ theta
        self.norms = np.linalg.norm(self.whitened, axis=2)
        self.lower_bounds = self.estimates - radius * self.norms

    def argmax(self, scores: np.ndarray) -> np.ndarray:
        """Return the first maximising action per context."""
        return np.argmax(np.where(self.mask, scores, -np.inf), axis=1)

    def one_hot(self, actions: np.ndarray) -> np.ndarray:
        probabilities = np.zeros(self.mask.shape)
        probabilities[np.arange(self.n_contexts), actions] = 1.0
        return probabilities

    def moments(self, probabilities: np.ndarray) -> tuple[float, np.ndarray]:
        """Return ``(v . theta, L^-1 v)`` of the stochastic policy."""
        mean_estimate = float(np.sum(probabilities * self.estimates)) / self.n_contexts
        mean_whitened = (
            np.einsum("sa,sad->d", probabilities, self.whitened) / self.n_contexts
        )
        return mean_estimate, mean_whitened

    def value(self, actions: np.ndarray) -> float:
        """Return the worst-case value of a deterministic policy."""
        rows = np.arange(self.n_contexts)
        mean_estimate = float(self.estimates[rows, actions].mean())
        mean_whitened = self.whitened[rows, actions].mean(axis=0)
        return mean_estimate - self.radius * float(np.linalg.norm(mean_whitened))

    def worst_case_scores(self, mean_whitened: np.ndarray) -> np.ndarray:
        """Return ``phi~_sa . theta'`` at the worst case ``theta'`` of ``v``."""
        norm = float(np.linalg.norm(mean_whitened))
        if norm == 0.0:
            # At v = 0 any theta' in C is a worst case, and theta itself is one.
            return self.estimates.copy()
        direction = mean_whitened / norm
        return self.estimates - self.radius * (self.whitened @ direction)

    def dual_bound(self, probabilities: np.ndarray) -> float:
        """Return an upper bound on the max-min value (max over policies at theta')."""
        _, mean_whitened = self.moments(probabilities)
        scores = self.worst_case_scores(mean_whitened)
        return float(np.max(np.where(self.mask, scores, -np.inf), axis=1).mean())

    def result(
        self, actions, probabilities, stochastic_value, **fields
    ) -> PolicyResult:
        rows = np.arange(self.n_contexts)
        estimates = self.estimates[rows, actions].copy()
        lower_bounds = self.lower_bounds[rows, actions].copy()
        value = self.value(actions)
        stochastic_value = float(stochastic_value)
        numbers_out = [value, stochastic_value, float(fields["gap"])]
        if not (
            all(math.isfinite(number) for number in numbers_out)
            and np.all(np.isfinite(estimates))
            and np.all(np.isfinite(lower_bounds))
        ):
            raise InvalidInputError(
                f"policy values overflow (value {value:.3g}, gap "
                f"{float(fields['gap']):.3g}); rescale theta, the features, "
                "the curvature or the radius"
            )
        # Frank-Wolfe compares numpy floats, so converged may be numpy.bool_,
        # which json.dumps rejects.
        fields["converged"] = bool(fields["converged"])
        return PolicyResult(
            actions=actions.astype(np.int64),
            estimates=estimates,
            lower_bounds=lower_bounds,
            probabilities=probabilities,
            value=value,
            stochastic_value=stochastic_value,
            **fields,
        )


def _reference_point(features: np.ndarray, reference, s: int) -> np.ndarray:
    """Return the feature vector that context ``s`` is measured against."""
    if reference is None:
        return np.zeros(features.shape[1])
    if isinstance(reference, str):
        if reference != "mean":
            raise InvalidInputError(
                f"context {s}: reference must be None, 'mean' or an action index, "
                f"got {reference!r}"
            )
        return features.mean(axis=0)
    if isinstance(reference, bool) or not isinstance(reference, numbers.Integral):
        raise InvalidInputError(
            f"context {s}: reference must be None, 'mean' or an action index, "
            f"got {reference!r}"
        )
    if not 0 <= reference < features.shape[0]:
        raise InvalidInputError(
            f"context {s}: reference index {reference} is out of range for "
            f"{features.shape[0]} actions"
        )
    return features[int(reference)]


def _pessimistic(
    batch: _ContextBatch, mode: str, tol: float, max_iter: int, max_enumerated: int
) -> PolicyResult:
    """Solve the batch max-min by Frank-Wolfe, then round to a deterministic policy."""
    probabilities, stochastic_value, bound, n_iter = _frank_wolfe(batch, tol, max_iter)
    scale = max(1.0, abs(stochastic_value))
    if (
        bound - stochastic_value > tol * scale
        and int(batch.mask.sum()) <= _MAX_DUAL_ROWS
    ):
        # The bound from the iterates is loose when v is near 0, where f has a
        # kink, so solve the dual directly for a tighter certificate.
        bound = min(bound, _dual_bound(batch, probabilities))
    gap = max(bound - stochastic_value, 0.0)
    converged = bool(gap <= tol * scale)

    # Deterministic policy: exact enumeration when small, else rounding plus
    # local search from the best of several roundings.
    n_policies = math.prod(int(size) for size in batch.sizes)
    if n_policies <= max_enumerated:
        actions = _enumerate_policies(batch)
        rounding = f"best of all {n_policies} deterministic policies"
    else:
        _, mean_whitened = batch.moments(probabilities)
        norm = float(np.linalg.norm(mean_whitened))
        direction = mean_whitened / norm if norm > 0.0 else np.zeros_like(mean_whitened)
        candidates = [batch.argmax(batch.lower_bounds), batch.argmax(probabilities)]
        # Per-context argmax along theta - s r L^-T u for pessimism s from 0
        # (greedy) to 1 (the linear step at the solution).
        for fraction in np.linspace(0.0, 1.0, 9):
            shifted = batch.estimates - fraction * batch.radius * (
                batch.whitened @ direction
            )
            candidates.append(batch.argmax(shifted))
        distinct = {tuple(start.tolist()): start for start in candidates}.values()
        best_starts = sorted(distinct, key=batch.value, reverse=True)[:3]
        searched = [
            _local_search(batch, start.copy(), max_iter) for start in best_starts
        ]
        actions = max(searched, key=batch.value)
        rounding = "rounding with one-context local search"

    if converged:
        message = (
            f"duality gap {gap:.3g} after {n_iter} Frank-Wolfe iterations; {rounding}"
        )
    else:
        message = (
            f"stopped after max_iter={max_iter} iterations with duality gap "
            f"{gap:.3g}; raise max_iter or tol; {rounding}"
        )
    logger.info(
        "policy.pessimistic.finished contexts=%d n_iter=%d gap=%.3g converged=%s",
        batch.n_contexts,
        n_iter,
        gap,
        converged,
    )
    return batch.result(
        actions,
        [
            row[:size].copy()
            for row, size in zip(probabilities, batch.sizes, strict=True)
        ],
        stochastic_value,
        n_iter=n_iter,
        gap=gap,
        converged=converged,
        mode=mode,
        message=message,
    )


def _frank_wolfe(
    batch: _ContextBatch, tol: float, max_iter: int
) -> tuple[np.ndarray, float, float, int]:
    """Maximise f over stochastic policies by Frank-Wolfe with pairwise steps.

    Each iteration line-searches two directions exactly and keeps the better:
    the Frank-Wolfe direction towards the best vertex, and the pairwise
    direction that moves, in every context, the mass of the worst action in
    use to the best action. The pairwise step can empty an action, which
    plain Frank-Wolfe never does.

    Returns the policy, its value ``f``, the smallest dual bound seen and the
    iteration count.
    """
    radius = batch.radius
    n = batch.n_contexts
    rows = np.arange(n)

    # Start from the better of the two closed-form deterministic policies.
    starts = [batch.argmax(batch.lower_bounds), batch.argmax(batch.estimates)]
    probabilities = batch.one_hot(max(starts, key=batch.value))
    mean_estimate, mean_whitened = batch.moments(probabilities)
    value = mean_estimate - radius * float(np.linalg.norm(mean_whitened))
    bound = math.inf

    n_iter = 0
    for iteration in range(1, max_iter + 1):
        n_iter = iteration
        # Worst case theta' of the current v. Every theta' in C gives a bound.
        scores = batch.worst_case_scores(mean_whitened)
        vertex = batch.argmax(scores)
        bound = min(bound, float(scores[rows, vertex].mean()))
        if bound - value <= tol * max(1.0, abs(value)):
            break

        # Frank-Wolfe direction: all contexts towards the best vertex.
        fw_estimate = float(batch.estimates[rows, vertex].mean()) - mean_estimate
        fw_whitened = batch.whitened[rows, vertex].mean(axis=0) - mean_whitened
        fw_step, fw_gain = _line_search(
            mean_estimate, mean_whitened, fw_estimate, fw_whitened, radius
        )

        # Pairwise direction: each context's worst used action to its best.
        used = (probabilities > 0.0) & batch.mask
        away = np.argmin(np.where(used, scores, np.inf), axis=1)
        moved = probabilities[rows, away] * (away != vertex)
        pw_estimate = (
            float(
                (
                    moved
                    * (batch.estimates[rows, vertex] - batch.estimates[rows, away])
                ).sum()
            )
            / n
        )
        pw_whitened = (
            moved[:, None] * (batch.whitened[rows, vertex] - batch.whitened[rows, away])
        ).sum(axis=0) / n
        pw_step, pw_gain = _line_search(
            mean_estimate, mean_whitened, pw_estimate, pw_whitened, radius
        )

        # Block pairwise direction: the same move in the one context where
        # it gains most to first order.
        gains = moved * (scores[rows, vertex] - scores[rows, away])
        block = int(np.argmax(gains))
        block_estimate = (
            moved[block]
            * (
                batch.estimates[block, vertex[block]]
                - batch.estimates[block, away[block]]
            )
            / n
        )
        block_whitened = (
            moved[block]
            * (
                batch.whitened[block, vertex[block]]
                - batch.whitened[block, away[block]]
            )
            / n
        )
        block_step, block_gain = _line_search(
            mean_estimate, mean_whitened, block_estimate, block_whitened, radius
        )

        if max(fw_gain, pw_gain, block_gain) <= 0.0:
            break
        if block_gain > max(fw_gain, pw_gain):
            shift = block_step * moved[block]
            probabilities[block, away[block]] -= shift
            probabilities[block, vertex[block]] += shift
            if block_step == 1.0:
                probabilities[block, away[block]] = 0.0
            mean_estimate += block_step * block_estimate
            mean_whitened = mean_whitened + block_step * block_whitened
        elif pw_gain > fw_gain:
            shift = pw_step * moved
            probabilities[rows, away] -= shift
            probabilities[rows, vertex] += shift
            if pw_step == 1.0:
                # Drop the emptied actions exactly, not up to rounding.
                emptied = moved > 0.0
                probabilities[rows[emptied], away[emptied]] = 0.0
            mean_estimate += pw_step * pw_estimate
            mean_whitened = mean_whitened + pw_step * pw_whitened
        else:
            probabilities *= 1.0 - fw_step
            probabilities[rows, vertex] += fw_step
            mean_estimate += fw_step * fw_estimate
            mean_whitened = mean_whitened + fw_step * fw_whitened
        value = mean_estimate - radius * float(np.linalg.norm(mean_whitened))

    return probabilities, value, bound, n_iter


def _dual_bound(batch: _ContextBatch, probabilities: np.ndarray) -> float:
    """Return ``min_{||u|| <= 1} mean_s max_a (phi~_sa . theta - r z_sa . u)``.

    Every point ``u`` of the unit ball gives ``theta' = theta - r L^-T u`` in
    the confidence set, so the value at any such u bounds the max-min from
    above. SLSQP minimises over ``(u, t)`` with ``t_s >= scores_sa(u)``; the
    returned bound is recomputed exactly at the (clipped) u it finds.
    """
    n, width, dimension = batch.whitened.shape
    estimates = batch.estimates[batch.mask]
    whitened = batch.whitened[batch.mask]
    owner = np.repeat(np.arange(n), batch.sizes)
    radius = batch.radius

    def exact(u: np.ndarray) -> float:
        norm = float(np.linalg.norm(u))
        if norm > 1.0:
            u = u / norm
        scores = batch.estimates - radius * (batch.whitened @ u)
        return float(np.max(np.where(batch.mask, scores, -np.inf), axis=1).mean())

    _, mean_whitened = batch.moments(probabilities)
    norm = float(np.linalg.norm(mean_whitened))
    u0 = mean_whitened / norm if norm > 0.0 else np.zeros(dimension)
    scores0 = batch.estimates - radius * (batch.whitened @ u0)
    t0 = np.max(np.where(batch.mask, scores0, -np.inf), axis=1)
    start = np.concatenate([u0, t0])

    # Constraint rows: t_{owner} - estimate + r z . u >= 0, and 1 - ||u||^2 >= 0.
    selector = np.zeros((estimates.size, n))
    selector[np.arange(estimates.size), owner] = 1.0
    jacobian = np.hstack([radius * whitened, selector])
    constraints = [
        {
            "type": "ineq",
            "fun": lambda x: jacobian @ x - estimates,
            "jac": lambda x: jacobian,
        },
        {
            "type": "ineq",
            "fun": lambda x: np.array([1.0 - float(x[:dimension] @ x[:dimension])]),
            "jac": lambda x: np.concatenate([-2.0 * x[:dimension], np.zeros(n)])[
                None, :
            ],
        },
    ]
    solution = optimize.minimize(
        lambda x: float(x[dimension:].mean()),
        start,
        jac=lambda x: np.concatenate([np.zeros(dimension), np.full(n, 1.0 / n)]),
        method="SLSQP",
        constraints=constraints,
        options={"maxiter": 200, "ftol": 1e-12},
    )
    candidates = [exact(u0)]
    if np.all(np.isfinite(solution.x)):
        candidates.append(exact(solution.x[:dimension]))
    return min(candidates)


def _enumerate_policies(batch: _ContextBatch) -> np.ndarray:
    """Return the deterministic policy with the largest worst-case value."""
    grids = np.meshgrid(*[np.arange(int(size)) for size in batch.sizes], indexing="ij")
    policies = np.stack([grid.ravel() for grid in grids], axis=1)
    rows = np.arange(batch.n_contexts)
    mean_estimates = batch.estimates[rows, policies].mean(axis=1)
    mean_whitened = batch.whitened[rows, policies].mean(axis=1)
    values = mean_estimates - batch.radius * np.linalg.norm(mean_whitened, axis=1)
    return policies[int(np.argmax(values))].copy()


def _line_search(
    estimate: float,
    whitened: np.ndarray,
    estimate_step: float,
    whitened_step: np.ndarray,
    radius: float,
) -> tuple[float, float]:
    """Maximise ``h(g) = estimate + g de - r ||z + g dz||`` over g in [0, 1].

    h is concave, so its derivative decreases and bisection finds the root.
    Returns the step and the gain ``h(step) - h(0)``.
    """
    a = float(whitened @ whitened)
    b = float(whitened @ whitened_step)
    c = float(whitened_step @ whitened_step)

    def height(g: float) -> float:
        return g * estimate_step - radius * math.sqrt(
            max(a + 2.0 * b * g + c * g * g, 0.0)
        )

    def slope(g: float) -> float:
        squared = max(a + 2.0 * b * g + c * g * g, 0.0)
        if squared == 0.0:
            return estimate_step - radius * math.sqrt(c)
        return estimate_step - radius * (b + c * g) / math.sqrt(squared)

    if slope(0.0) <= 0.0:
        return 0.0, 0.0
    if slope(1.0) >= 0.0:
        step = 1.0
    else:
        low, high = 0.0, 1.0
        for _ in range(_LINE_SEARCH_STEPS):
            middle = 0.5 * (low + high)
            if slope(middle) > 0.0:
                low = middle
            else:
                high = middle
        step = low
    return step, height(step) - height(0.0)


def _local_search(
    batch: _ContextBatch, actions: np.ndarray, max_passes: int
) -> np.ndarray:
    """Switch one context at a time to its best action while the value rises."""
    rows = np.arange(batch.n_contexts)
    n = batch.n_contexts
    total_estimate = float(batch.estimates[rows, actions].sum())
    total_whitened = batch.whitened[rows, actions].sum(axis=0)
    current = (
        total_estimate - batch.radius * float(np.linalg.norm(total_whitened))
    ) / n
    for _ in range(max_passes):
        improved = False
        for s in range(n):
            size = int(batch.sizes[s])
            if size == 1:
                continue
            old = actions[s]
            estimates = (
                total_estimate - batch.estimates[s, old] + batch.estimates[s, :size]
            )
            whitened = (
                total_whitened - batch.whitened[s, old] + batch.whitened[s, :size]
            )
            values = (estimates - batch.radius * np.linalg.norm(whitened, axis=1)) / n
            best = int(np.argmax(values))
            if values[best] > current + 1e-12 * max(1.0, abs(current)):
                actions[s] = best
                total_estimate = float(estimates[best])
                total_whitened = whitened[best].copy()
                current = float(values[best])
                improved = True
        if not improved:
            break
    return actions


def _cholesky(curvature, dimension: int) -> np.ndarray:
    """Return the lower Cholesky factor of a symmetric positive definite Lambda."""
    matrix = np.asarray(curvature, dtype=np.float64)
    if matrix.shape != (dimension, dimension):
        raise InvalidInputError(
            f"curvature must have shape ({dimension}, {dimension}), got {matrix.shape}"
        )
    if not np.all(np.isfinite(matrix)):
        raise InvalidInputError("curvature contains NaN or infinity")
    magnitude = max(float(np.max(np.abs(matrix))), 1e-300)
    if np.max(np.abs(matrix - matrix.T)) > 1e-8 * magnitude:
        raise InvalidInputError("curvature must be a symmetric matrix")
    try:
        return linalg.cholesky(0.5 * (matrix + matrix.T), lower=True)
    except linalg.LinAlgError:
        raise InvalidInputError(
            "curvature must be positive definite; add a positive ridge weight"
        ) from None


def _check_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be finite, got {value}")
    return value
