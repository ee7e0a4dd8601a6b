"""Per-task comparison data shared by every solver."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from solvers.errors import InsufficientDataError, InvalidInputError


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
        If the shapes disagree, an entry is NaN or infinite, or a label lies
        outside [0, 1].
    InsufficientDataError
        If the task has fewer than ``min_labels`` comparisons.
    """
    X = np.asarray(task.X, dtype=np.float64)
    y = np.asarray(task.y, dtype=np.float64)
    if X.ndim != 2:
        raise InvalidInputError(
            f"task '{task.name}': features must be a 2-D array, got shape {X.shape}"
        )
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise InvalidInputError(
            f"task '{task.name}': expected {X.shape[0]} labels, got shape {y.shape}"
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
    if not np.all(np.isfinite(y)) or np.any((y < 0.0) | (y > 1.0)):
        raise InvalidInputError(
            f"task '{task.name}': labels must be finite numbers in [0, 1]"
        )
    if X is task.X and y is task.y:
        return task
    return TaskData(task.name, X, y)


def check_tasks(
    tasks: Sequence[TaskData], *, min_labels: int = 0
) -> tuple[list[TaskData], int]:
    """Validate a non-empty list of tasks that share one dimension.

    Returns the validated tasks and their common dimension d.
    """
    if len(tasks) == 0:
        raise InvalidInputError("at least one task is required")
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"task names must be unique, got {names}")
    dimension = np.asarray(tasks[0].X).shape[-1]
    checked = [check_task(task, dimension, min_labels=min_labels) for task in tasks]
    return checked, int(dimension)
