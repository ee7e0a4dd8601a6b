"""Tests of task validation in solvers.data."""

import numpy as np
import pytest

from solvers.data import MAX_ABS_FEATURE, TaskData, check_task, check_tasks
from solvers.errors import InvalidInputError
from solvers.logistic import fit_ridge_logistic
from solvers.lowrank import fit_lowrank


def sample_task(name="task0", seed=0):
    X = np.random.default_rng(seed).normal(size=(40, 4))
    return TaskData(name, X, (X[:, 0] > 0) * 1.0)


@pytest.mark.parametrize(
    "X, y",
    [
        (np.array([["a", "b"]]), np.ones(1)),
        ([[1.0, 2.0], [3.0]], np.ones(2)),
        (np.ones((2, 2)), ["x", "y"]),
        (np.ones((2, 2), dtype=complex), np.ones(2)),
        (np.ones((2, 2)), np.ones(2, dtype=complex)),
        (np.array([[1.0, None]], dtype=object), np.ones(1)),
    ],
)
def test_non_numeric_arrays_rejected(X, y):
    with pytest.raises(InvalidInputError, match="task 'bad'"):
        check_task(TaskData("bad", X, y))


def test_zero_columns_rejected():
    with pytest.raises(InvalidInputError, match="at least one column"):
        check_task(TaskData("empty", np.zeros((3, 0)), np.ones(3)))


def test_zero_columns_rejected_by_lowrank():
    task = TaskData("empty", np.zeros((3, 0)), np.ones(3))
    with pytest.raises(InvalidInputError, match="task 'empty'"):
        fit_lowrank([task], 1, 0.1)


def test_feature_bound_accepted_at_limit():
    X = np.full((2, 2), MAX_ABS_FEATURE)
    checked = check_task(TaskData("edge", X, np.ones(2)))
    assert checked.X.dtype == np.float64


def test_huge_features_rejected():
    task = sample_task()
    with pytest.raises(InvalidInputError, match="task 'target'.*at most"):
        fit_ridge_logistic(task.X * 1e160, task.y, 0.1)
    scaled = TaskData("huge", task.X * 1e160, task.y)
    with pytest.raises(InvalidInputError, match="task 'huge'.*at most"):
        fit_lowrank([scaled, sample_task("other", seed=1)], 1, 0.1)


@pytest.mark.parametrize("name", [3, None, ("a",), ["a"]])
def test_non_string_names_rejected(name):
    task = sample_task()
    with pytest.raises(InvalidInputError, match="name must be a string"):
        check_task(TaskData(name, task.X, task.y))
    with pytest.raises(InvalidInputError, match="name must be a string"):
        check_tasks([sample_task("ok"), TaskData(name, task.X, task.y)])


def test_check_tasks_accepts_generator():
    checked, dimension = check_tasks(sample_task(f"t{m}", m) for m in range(3))
    assert [task.name for task in checked] == ["t0", "t1", "t2"]
    assert dimension == 4


def test_check_tasks_rejects_non_iterable():
    with pytest.raises(InvalidInputError, match="iterable"):
        check_tasks(5)


def test_check_tasks_rejects_non_task_item():
    with pytest.raises(InvalidInputError, match=r"tasks\[1\]"):
        check_tasks([sample_task(), "not a task"])


def test_ragged_first_task_named():
    with pytest.raises(InvalidInputError, match="task 'first'"):
        check_tasks([TaskData("first", [[1.0, 2.0], [3.0]], [1.0, 0.0])])
