"""Per-task comparison data shared by every solver."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from solvers.errors import InsufficientDataError, InvalidInputError

# Largest accepted |feature|. With |x| <= 1e100 a product of two features is at
# most 1e200, so sums of n such products (||X||_F^2, the Hessian X^T W X with
# weights <= 1/4) stay below the float64 maximum of about 1.8e308 for any
# n * d up to about 1e108. Larger entries overflow those sums to infinity.
MAX_ABS_FEATURE = 1e100


def _as_real_array(values: object, task: str, array_name: str) -> np.ndarray:
    """Convert ``values`` to a float64 array, raising InvalidInputError if it fails."""
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"task '{task}': {array_name} must be a rectangular numeric array ({error})"
        ) from error
    if raw.dtype == object or not (
        np.issubdtype(raw.dtype, np.number) or raw.dtype == np.bool_
    ):
        raise InvalidInputError(
            f"task '{task}': {array_name} must be numeric, got dtype {raw.dtype}"
        )
    if np.iscomplexobj(raw):
        raise InvalidInputError(
            f"task '{task}': {array_name} must be real, got dtype {raw.dtype}"
        )
    return np.asarray(raw, dtype=np.float64)


@dataclass(frozen=True)
class TaskData:
    """Pairwise comparisons of one task.

    Attributes
    ----------
    name : str
        Task name, used in error messages and diagnostics.
    X : ndarray of shape (n, d)
        Feature differences ``phi(s, a1) - phi(s, a2)``, one row per comparison.
    y : ndarray of shape (n,)
        Labels in [0, 1]: 1 means the first action was preferred, 0 the second,
        fractions are ties or split votes.
    """

    name: str
    X: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        """Number of comparisons."""
        return int(self.X.shape[0])

    @property
    def dimension(self) -> int:
        """Feature dimension d."""
        return int(self.X.shape[1])


def check_task(
    task: TaskData, dimension: int | None = None, *, min_labels: int = 0
) -> TaskData:
    """Validate one task and return it with float64 arrays.

    Raises
    ------
    InvalidInputError
        If the name is not a string, or an array is ragged, non-numeric or
        complex. Also if the shapes disagree, the features have no column, an
        entry is NaN or infinite, a feature exceeds ``MAX_ABS_FEATURE`` in
        magnitude, or a label lies outside [0, 1].
    InsufficientDataError
        If the task has fewer than ``min_labels`` comparisons.
    """
    if not isinstance(task.name, str):
        raise InvalidInputError(
            f"task name must be a string, got {type(task.name).__name__} {task.name!r}"
        )
    X = _as_real_array(task.X, task.name, "features")
    y = _as_real_array(task.y, task.name, "labels")
    if X.ndim != 2:
        raise InvalidInputError(
            f"task '{task.name}': features must be a 2-D array, got shape {X.shape}"
        )
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise InvalidInputError(
            f"task '{task.name}': expected {X.shape[0]} labels, got shape {y.shape}"
        )
    if X.shape[1] == 0:
        raise InvalidInputError(
            f"task '{task.name}': features must have at least one column, "
            f"got shape {X.shape}"
        )
    if dimension is not None and X.shape[1] != dimension:
        raise InvalidInputError(
            f"task '{task.name}': features have dimension {X.shape[1]}, "
            f"expected {dimension}"
        )
    if X.shape[0] < min_labels:
        if X.shape[0] == 0:
            raise InsufficientDataError(f"task '{task.name}' has no labels")
        raise InsufficientDataError(
            f"task '{task.name}' has {X.shape[0]} labels, "
            f"at least {min_labels} are needed"
        )
    if not np.all(np.isfinite(X)):
        raise InvalidInputError(f"task '{task.name}': features contain NaN or infinity")
    if X.size and np.max(np.abs(X)) > MAX_ABS_FEATURE:
        raise InvalidInputError(
            f"task '{task.name}': feature magnitudes must be at most "
            f"{MAX_ABS_FEATURE:g}, got {np.max(np.abs(X)):.3g}; rescale the features"
        )
    if not np.all(np.isfinite(y)) or np.any((y < 0.0) | (y > 1.0)):
        raise InvalidInputError(
            f"task '{task.name}': labels must be finite numbers in [0, 1]"
        )
    if X is task.X and y is task.y:
        return task
    return TaskData(task.name, X, y)


def check_tasks(
    tasks: Iterable[TaskData], *, min_labels: int = 0
) -> tuple[list[TaskData], int]:
    """Validate a non-empty collection of tasks that share one dimension.

    ``tasks`` may be any iterable, including a generator, and is read once.
    Returns the validated tasks as a list and their common dimension d.
    """
    try:
        tasks = list(tasks)
    except TypeError as error:
        raise InvalidInputError(
            f"tasks must be an iterable of TaskData, got {type(tasks).__name__}"
        ) from error
    if len(tasks) == 0:
        raise InvalidInputError("at least one task is required")
    for index, task in enumerate(tasks):
        if not isinstance(task, TaskData):
            raise InvalidInputError(
                f"tasks[{index}] must be a TaskData, got {type(task).__name__}"
            )
        if not isinstance(task.name, str):
            raise InvalidInputError(
                f"tasks[{index}]: task name must be a string, got "
                f"{type(task.name).__name__} {task.name!r}"
            )
    # The first task fixes the dimension. Checking it alone first turns a
    # ragged or non-numeric first task into an InvalidInputError naming it.
    first = check_task(tasks[0], min_labels=min_labels)
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"task names must be unique, got {names}")
    dimension = first.dimension
    checked = [first] + [
        check_task(task, dimension, min_labels=min_labels) for task in tasks[1:]
    ]
    return checked, int(dimension)
