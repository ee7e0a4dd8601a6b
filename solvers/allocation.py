"""Label budget allocation over source tasks (Active-Sample, eq. 3.1).

Both functions return whole-number quotas that add up exactly to the amount
they distribute. Fractions are rounded by the largest-remainder method: every
task first gets the floor of its exact share, and the labels left over go one
each to the tasks with the largest fractional parts.
"""

from __future__ import annotations

import logging
import math
import numbers

import numpy as np
from numpy.typing import ArrayLike

from solvers.errors import InvalidInputError

logger = logging.getLogger(__name__)

# Totals above 2**53 cannot be multiplied by a float share without losing
# whole labels, so the float rounding in active_sample would no longer be exact.
MAX_TOTAL = 2**53

# Largest remaining need per task that split_batch accepts, so every count it
# returns fits in int64 with room to spare.
MAX_REMAINING = 2**62


def _check_count(value: object, name: str, *, maximum: int | None = None) -> int:
    """Return ``value`` as a non-negative int or raise InvalidInputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    count = int(value)
    if count < 0:
        raise InvalidInputError(f"{name} must be non-negative, got {count}")
    if maximum is not None and count > maximum:
        raise InvalidInputError(f"{name} must be at most {maximum}, got {count}")
    return count


def _largest_remainder(
    floors: np.ndarray, remainders: np.ndarray, leftover: int, priority: np.ndarray
) -> np.ndarray:
    """Add one label to each of the ``leftover`` tasks with the largest remainder.

    Ties in the remainder go to the task with the larger ``priority`` and then
    to the lower index, so tasks with equal inputs are treated alike.
    """
    counts = floors.astype(np.int64).copy()
    if leftover == 0:
        return counts
    # np.lexsort sorts by the last key first: remainder, then priority, then index.
    order = np.lexsort((np.arange(counts.size), -priority, -remainders))
    rounds, extra = divmod(leftover, counts.size)
    counts += rounds
    counts[order[:extra]] += 1
    return counts


def active_sample(total: int, relevance: ArrayLike) -> np.ndarray:
    """Split a label budget over source tasks by task relevance (eq. 3.1).

    Task ``m`` receives the exact share

    ``n_m = (|nu_m| / (2 ||nu||_1) + 1 / (2 M)) * N``,

    so half of the budget follows relevance and half is spread uniformly;
    every task gets at least ``floor(N / (2 M))`` labels. The shares are
    rounded by the largest-remainder method and add up to exactly ``N``.

    Parameters
    ----------
    total : int
        Budget ``N``, a non-negative integer of at most ``2**53``.
    relevance : array-like of shape (M,)
        Task relevance ``nu``. Signs are ignored (``|nu_m|`` is used). An
        all-zero vector gives the uniform split ``N / M``.

    Returns
    -------
    ndarray of int64, shape (M,)
        Quotas ``n_m`` with ``sum(n_m) == total``. Remainder ties go to the
        task with the larger ``|nu_m|``, then to the lower index, so the
        quotas never decrease as ``|nu_m|`` grows.

    Raises
    ------
    InvalidInputError
        If ``total`` is negative, not an integer or above ``2**53``, or if
        ``relevance`` is empty, not one-dimensional, or has a NaN or infinite
        entry.
    """
    total = _check_count(total, "total", maximum=MAX_TOTAL)
    weights = np.abs(_check_vector(relevance, "relevance"))
    n_tasks = weights.size

    # Exact shares of eq. 3.1. The formula is 0/0 at nu = 0, which is defined
    # as the uniform split of the whole budget. Dividing by max |nu_m| first
    # keeps the l1 norm finite for entries near the float64 maximum.
    largest = float(weights.max())
    if largest > 0.0:
        weights = weights / largest
    l1 = float(weights.sum())
    if l1 > 0.0:
        shares = weights / (2.0 * l1) + 1.0 / (2.0 * n_tasks)
    else:
        shares = np.full(n_tasks, 1.0 / n_tasks)
    exact = shares * total

    floors = np.floor(exact)
    remainders = exact - floors
    leftover = total - int(floors.sum())
    if leftover < 0:
        # Float rounding of the shares can push the floors one label over the
        # budget, so take the excess back from the smallest remainders.
        counts = floors.astype(np.int64)
        order = np.lexsort((-np.arange(n_tasks), weights, remainders))
        order = order[counts[order] > 0]
        counts[order[:-leftover]] -= 1
    else:
        counts = _largest_remainder(floors, remainders, leftover, weights)

    logger.debug("active_sample total=%d tasks=%d", total, n_tasks)
    return counts


def split_batch(batch: int, remaining: ArrayLike) -> np.ndarray:
    """Split the next batch of labels over tasks in proportion to their need.

    Task ``m`` receives ``batch * r_m / sum(r)`` labels, rounded by the
    largest-remainder method in exact integer arithmetic, where ``r_m`` is the
    number of labels it still needs. When the batch is larger than the total
    need, every task receives exactly its remaining need.

    Parameters
    ----------
    batch : int
        Number of labels to hand out, non-negative. Any size is accepted
        because the arithmetic uses Python integers.
    remaining : array-like of shape (M,)
        Labels each task still needs: non-negative whole numbers of at most
        ``MAX_REMAINING = 2**62``. Python or numpy integers are used exactly.
        Floats must be whole, and floats above ``2**53`` may already have
        been rounded by the caller.

    Returns
    -------
    ndarray of int64, shape (M,)
        Counts with ``counts[m] <= remaining[m]`` and
        ``sum(counts) == min(batch, sum(remaining))``.

    Raises
    ------
    InvalidInputError
        If ``batch`` is negative or not an integer, or ``remaining`` is empty,
        not one-dimensional, or has a negative, fractional, NaN, infinite or
        boolean entry or one above ``MAX_REMAINING``.
    """
    batch = _check_count(batch, "batch")
    need = _check_whole_numbers(remaining, "remaining", maximum=MAX_REMAINING)
    total_need = sum(need)
    if batch >= total_need:
        return np.asarray(need, dtype=np.int64)

    # Python integers keep batch * r_m and the remainders exact for any size,
    # and the floor of each share is at most r_m because batch < sum(r).
    floors = [batch * r // total_need for r in need]
    remainders = [batch * r % total_need for r in need]
    leftover = batch - sum(floors)
    # The leftover equals (sum of remainders) / total_need, which is smaller than
    # the number of tasks with a positive remainder, so no task goes over r_m.
    # Ties in the remainder go to the larger need, then to the lower index.
    order = sorted(range(len(need)), key=lambda m: (-remainders[m], -need[m], m))
    for m in order[:leftover]:
        floors[m] += 1
    return np.asarray(floors, dtype=np.int64)


def _check_whole_numbers(values: ArrayLike, name: str, *, maximum: int) -> list[int]:
    """Return a non-empty 1-D sequence of whole numbers as exact Python ints."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"{name} must be an array of numbers: {error}"
        ) from None
    if array.ndim != 1:
        raise InvalidInputError(
            f"{name} must be a one-dimensional array, got shape {array.shape}"
        )
    if array.size == 0:
        raise InvalidInputError(f"{name} must contain at least one task")
    counts = []
    for item in array.tolist():
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            raise InvalidInputError(
                f"{name} must contain non-negative whole numbers, got {item!r}"
            )
        if not isinstance(item, numbers.Integral) and not (
            math.isfinite(item) and float(item).is_integer()
        ):
            raise InvalidInputError(
                f"{name} must contain non-negative whole numbers, got {item!r}"
            )
        count = int(item)
        if count < 0:
            raise InvalidInputError(
                f"{name} must contain non-negative whole numbers, got {count}"
            )
        if count > maximum:
            raise InvalidInputError(
                f"{name} entries must be at most {maximum}, got {count}"
            )
        counts.append(count)
    return counts


def _check_vector(values: ArrayLike, name: str) -> np.ndarray:
    """Return a non-empty finite 1-D float64 array or raise InvalidInputError."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"{name} must be an array of numbers: {error}"
        ) from None
    if array.ndim != 1:
        raise InvalidInputError(
            f"{name} must be a one-dimensional array, got shape {array.shape}"
        )
    if array.size == 0:
        raise InvalidInputError(f"{name} must contain at least one task")
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} contains NaN or infinity")
    return array
