"""Tests of the multi-task low-rank fit and of rank selection.

Planted instances are generated here with numpy: a random orthonormal basis B
(d x k), random coordinates W (k x M), Gaussian features and Bernoulli labels
with P(y = 1) = sigmoid(x . B w_m).
"""

import tracemalloc

import numpy as np
import pytest
import scipy.optimize
from numpy.testing import assert_allclose
from sklearn.linear_model import LogisticRegression

from solvers.data import TaskData
from solvers.errors import InsufficientDataError, InvalidInputError
from solvers.lowrank import (
    _Profile,
    _task_value_gradient,
    fit_lowrank,
    select_rank,
)


def planted_tasks(d, k, M, n, seed, scale=2.0):
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, k)))[0]
    weights = rng.standard_normal((k, M)) * scale
    tasks = []
    for m in range(M):
        X = rng.standard_normal((n, d))
        p = 1.0 / (1.0 + np.exp(-X @ basis @ weights[:, m]))
        tasks.append(TaskData(f"task{m}", X, (rng.random(n) < p).astype(float)))
    return basis, tasks


def reference_objective(thetas, tasks, ridge):
    """F(Theta) written out with plain numpy (moderate logits only)."""
    total = 0.0
    for m, task in enumerate(tasks):
        t = task.X @ thetas[:, m]
        total += np.sum(np.log1p(np.exp(t)) - task.y * t)
        total += ridge * task.n * thetas[:, m] @ thetas[:, m]
    return total


def reference_gradients(thetas, tasks, ridge):
    """grad F(Theta), shape (d, M), written out with plain numpy."""
    G = np.empty_like(thetas)
    for m, task in enumerate(tasks):
        p = 1.0 / (1.0 + np.exp(-task.X @ thetas[:, m]))
        G[:, m] = task.X.T @ (p - task.y) + 2.0 * ridge * task.n * thetas[:, m]
    return G


def largest_principal_angle(A, B):
    """Largest principal angle in degrees between the spans of orthonormal A and B."""
    cosines = np.linalg.svd(A.T @ B, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def numerical_gradient(function, x, step=1e-5):
    gradient = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[index] = step
        gradient[index] = (
            -function(x + 2 * e)
            + 8 * function(x + e)
            - 8 * function(x - e)
            + function(x - 2 * e)
        ) / (12 * step)
    return gradient


# ---------------------------------------------------------------------------
# Gradients of the objectives


def test_task_gradient_matches_finite_differences():
    _, tasks = planted_tasks(6, 2, 1, 40, seed=0)
    task = tasks[0]
    theta = np.random.default_rng(1).standard_normal(6)
    penalty = 0.7
    value, gradient = _task_value_gradient(task.X, task.y, theta, penalty)
    numerical = numerical_gradient(
        lambda th: _task_value_gradient(task.X, task.y, th, penalty)[0], theta
    )
    assert value == pytest.approx(
        reference_objective(theta[:, None], tasks, penalty / task.n), rel=1e-13
    )
    assert_allclose(gradient, numerical, rtol=1e-7, atol=1e-8)


def test_profile_gradient_matches_finite_differences():
    # phi(B) = min_W F(B W); its gradient is what the refinement follows.
    _, tasks = planted_tasks(6, 2, 4, 60, seed=2)
    profile = _Profile(tasks, ridge=0.01, max_inner=100)
    B = np.random.default_rng(3).standard_normal((6, 2))
    warm = np.zeros((6, 4))
    point = profile.value(B, warm)
    profile.add_gradient(point)
    numerical = numerical_gradient(lambda b: profile.value(b, warm).value, B, step=1e-4)
    assert_allclose(point.gradient, numerical, rtol=1e-6, atol=1e-6)


def test_profile_value_depends_only_on_span():
    _, tasks = planted_tasks(6, 2, 3, 50, seed=4)
    profile = _Profile(tasks, ridge=0.02, max_inner=100)
    B = np.random.default_rng(5).standard_normal((6, 2))
    mixing = np.array([[2.0, 1.0], [0.5, -3.0]])
    warm = np.zeros((6, 3))
    assert profile.value(B @ mixing, warm).value == pytest.approx(
        profile.value(B, warm).value, rel=1e-12
    )


# ---------------------------------------------------------------------------
# Optimality and agreement with reference solvers


def test_converged_fit_is_stationary_on_rank_manifold():
    _, tasks = planted_tasks(10, 2, 6, 150, seed=6)
    ridge = 0.01
    fit = fit_lowrank(tasks, 2, ridge, tol=1e-8)
    assert fit.converged
    assert fit.rank == 2

    # Riemannian gradient from scratch: project grad F onto the tangent space
    # at Theta, spanned by column-space and row-space directions.
    G = reference_gradients(fit.thetas, tasks, ridge)
    U, _, Vt = np.linalg.svd(fit.thetas, full_matrices=False)
    U, V = U[:, :2], Vt[:2].T
    projected = U @ (U.T @ G) + (G - U @ (U.T @ G)) @ V @ V.T
    total = sum(task.n for task in tasks)
    assert np.linalg.norm(projected) / total <= 1e-8
    assert fit.gradient_norm == pytest.approx(
        np.linalg.norm(projected) / total, rel=0.2
    )
    assert fit.objective == pytest.approx(
        reference_objective(fit.thetas, tasks, ridge), rel=1e-12
    )


def test_lowrank_fit_matches_scipy_inside_its_subspace():
    # At the optimum every theta_m is the ridge fit of task m restricted to the
    # learned subspace; scipy's BFGS solves that k-dimensional problem here.
    _, tasks = planted_tasks(8, 2, 5, 120, seed=7)
    ridge = 0.02
    fit = fit_lowrank(tasks, 2, ridge, tol=1e-9)
    for m, task in enumerate(tasks):
        single_task = [task]

        def objective(w, single_task=single_task):
            return reference_objective((fit.basis @ w)[:, None], single_task, ridge)

        def gradient(w, single_task=single_task):
            thetas = (fit.basis @ w)[:, None]
            return fit.basis.T @ reference_gradients(thetas, single_task, ridge)[:, 0]

        result = scipy.optimize.minimize(
            objective, np.zeros(2), jac=gradient, method="BFGS", options={"gtol": 1e-11}
        )
        assert_allclose(fit.thetas[:, m], fit.basis @ result.x, rtol=1e-6, atol=1e-7)


def test_result_shapes_and_orthonormal_basis():
    _, tasks = planted_tasks(9, 3, 7, 80, seed=8)
    fit = fit_lowrank(tasks, 3, 0.02)
    assert fit.thetas.shape == (9, 7)
    assert fit.basis.shape == (9, 3)
    assert fit.weights.shape == (3, 7)
    assert fit.task_names == [task.name for task in tasks]
    assert_allclose(fit.basis.T @ fit.basis, np.eye(3), atol=1e-12)
    assert_allclose(fit.basis @ fit.weights, fit.thetas, atol=1e-10)
    assert np.linalg.matrix_rank(fit.thetas, tol=1e-8) <= 3


def test_random_start_reaches_spectral_objective():
    _, tasks = planted_tasks(10, 2, 6, 300, seed=9)
    spectral = fit_lowrank(tasks, 2, 0.005)
    random = fit_lowrank(tasks, 2, 0.005, init="random")
    assert spectral.converged and random.converged
    assert random.objective == pytest.approx(spectral.objective, rel=1e-9)
    assert largest_principal_angle(random.basis, spectral.basis) < 0.01


def test_full_rank_fits_tasks_independently():
    # With rank >= M the constraint is inactive: each task is sklearn's fit.
    _, tasks = planted_tasks(5, 2, 3, 200, seed=10)
    ridge = 0.01
    for rank in (3, 50):
        fit = fit_lowrank(tasks, rank, ridge, tol=1e-9)
        assert fit.rank == 3
        assert fit.converged
        assert "fit independently" in fit.message
        for m, task in enumerate(tasks):
            reference = LogisticRegression(
                C=1.0 / (2.0 * ridge * task.n),
                fit_intercept=False,
                tol=1e-12,
                max_iter=10_000,
            ).fit(task.X, task.y)
            assert_allclose(
                fit.thetas[:, m], reference.coef_.ravel(), rtol=1e-5, atol=1e-7
            )


def test_badly_scaled_features_converge():
    # Feature scales spanning two decades and unequal task weights make the
    # Hessian ill-conditioned; the preconditioned refinement still converges.
    rng = np.random.default_rng(23)
    d, M = 12, 6
    basis = np.linalg.qr(rng.standard_normal((d, 2)))[0]
    weights = rng.standard_normal((2, M)) * np.array([[4.0], [0.3]])
    scales = np.logspace(-1.0, 1.0, d)
    tasks = []
    for m in range(M):
        X = rng.standard_normal((300, d)) * scales
        p = 1.0 / (1.0 + np.exp(-X @ (basis @ weights[:, m] / scales)))
        tasks.append(TaskData(f"task{m}", X, (rng.random(300) < p).astype(float)))
    fit = fit_lowrank(tasks, 2, 1e-3, max_iter=100)
    assert fit.converged
    assert fit.n_iter < 100


def test_labels_without_signal_give_zero_estimate():
    # With y = 1/2 everywhere Theta = 0 is the optimum at every rank.
    rng = np.random.default_rng(24)
    tasks = [
        TaskData(f"task{m}", rng.standard_normal((30, 5)), np.full(30, 0.5))
        for m in range(4)
    ]
    for rank in (1, 2, 4):
        fit = fit_lowrank(tasks, rank, 0.01)
        assert fit.converged
        assert_allclose(fit.thetas, 0.0, atol=1e-10)
        assert_allclose(fit.basis.T @ fit.basis, np.eye(fit.rank), atol=1e-12)


def test_fit_reports_max_iter():
    _, tasks = planted_tasks(10, 2, 6, 100, seed=11)
    fit = fit_lowrank(tasks, 2, 0.01, max_iter=1, init="random")
    assert not fit.converged
    assert fit.n_iter == 1
    assert "max_iter=1" in fit.message
    assert np.all(np.isfinite(fit.thetas))


# ---------------------------------------------------------------------------
# Planted-subspace recovery


def test_planted_subspace_angle_shrinks_with_labels():
    angles = []
    for n in (100, 400, 1600):
        basis, tasks = planted_tasks(12, 2, 8, n, seed=12)
        fit = fit_lowrank(tasks, 2, 1.0 / n)
        assert fit.converged
        angles.append(largest_principal_angle(basis, fit.basis))
    assert angles[0] > angles[1] > angles[2]
    assert angles[2] < 5.0


def test_fit_does_not_copy_task_matrices():
    # The fit reads the task matrices in place: peak traced allocation stays a
    # small fraction of the feature matrix (two copies would be 2.0).
    _, tasks = planted_tasks(32, 3, 10, 2000, seed=13)
    feature_bytes = sum(task.X.nbytes for task in tasks)
    tracemalloc.start()
    try:
        fit_lowrank(tasks, 3, 1e-3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * feature_bytes


# ---------------------------------------------------------------------------
# Degenerate inputs


def test_tiny_separable_equal_and_fractional_tasks_stay_finite():
    rng = np.random.default_rng(14)
    tasks = [
        TaskData("one label", rng.standard_normal((1, 6)), np.array([1.0])),
        TaskData("all zero", rng.standard_normal((3, 6)), np.zeros(3)),
        TaskData("fractional", rng.standard_normal((2, 6)), np.array([0.5, 0.25])),
        TaskData(
            "separable", rng.standard_normal((4, 6)), np.array([1.0, 0.0, 1.0, 0.0])
        ),
        TaskData("regular", rng.standard_normal((60, 6)), (rng.random(60) < 0.5) * 1.0),
    ]
    for rank in (1, 2, 5):
        fit = fit_lowrank(tasks, rank, 0.05)
        assert fit.converged
        assert np.all(np.isfinite(fit.thetas))
        assert np.isfinite(fit.objective)


def test_single_task_is_unconstrained_fit():
    _, tasks = planted_tasks(4, 1, 1, 100, seed=15)
    fit = fit_lowrank(tasks, 2, 0.01)
    assert fit.rank == 1
    assert fit.basis.shape == (4, 1)
    assert fit.converged


def test_task_without_labels_is_rejected_by_name():
    _, tasks = planted_tasks(4, 1, 2, 20, seed=16)
    tasks.append(TaskData("coherence", np.zeros((0, 4)), np.zeros(0)))
    with pytest.raises(InsufficientDataError, match="task 'coherence' has no labels"):
        fit_lowrank(tasks, 1, 0.1)


def test_nan_features_are_rejected_by_name():
    _, tasks = planted_tasks(4, 1, 2, 20, seed=17)
    X = tasks[1].X.copy()
    X[3, 2] = np.nan
    tasks[1] = TaskData("coherence", X, tasks[1].y)
    with pytest.raises(InvalidInputError, match="task 'coherence'.*NaN"):
        fit_lowrank(tasks, 1, 0.1)


@pytest.mark.parametrize(
    ("rank", "ridge", "kwargs", "fragment"),
    [
        (0, 0.1, {}, "rank"),
        (True, 0.1, {}, "rank"),
        (1.5, 0.1, {}, "rank"),
        ("2", 0.1, {}, "rank"),
        (1, 0.0, {}, "ridge"),
        (1, -0.1, {}, "ridge"),
        (1, np.inf, {}, "ridge"),
        (1, 0.1, {"tol": -1.0}, "tol"),
        (1, 0.1, {"max_iter": 0}, "max_iter"),
        (1, 0.1, {"init": "warm"}, "init"),
        (1, 0.1, {"init": np.ones((3, 1))}, "shape"),
        (1, 0.1, {"init": np.zeros((4, 1))}, "rank deficient"),
    ],
)
def test_invalid_arguments_are_rejected(rank, ridge, kwargs, fragment):
    _, tasks = planted_tasks(4, 1, 3, 20, seed=18)
    with pytest.raises(InvalidInputError, match=fragment):
        fit_lowrank(tasks, rank, ridge, **kwargs)


# ---------------------------------------------------------------------------
# Rank selection


def test_select_rank_picks_planted_rank():
    _, tasks = planted_tasks(8, 2, 6, 200, seed=19, scale=2.5)
    selection = select_rank(tasks, [4, 1, 2, 3, 2], 1.0 / 200)
    assert selection.rank == 2
    assert selection.candidates == [1, 2, 3, 4]
    assert selection.n_folds == 3
    assert len(selection.heldout_log_likelihood) == 4
    assert len(selection.standard_errors) == 4
    assert all(value < 0.0 for value in selection.heldout_log_likelihood)
    # Rank 1 cannot express two independent directions: clearly worse.
    assert (
        selection.heldout_log_likelihood[0] < selection.heldout_log_likelihood[1] - 0.01
    )
    assert "rank 2" in selection.message


def test_select_rank_prefers_smaller_rank_on_ties():
    # Identical task parameters: every candidate fits equally well up to noise,
    # and the one-standard-error rule keeps rank 1.
    rng = np.random.default_rng(20)
    theta = rng.standard_normal(6) * 2.0
    tasks = []
    for m in range(5):
        X = rng.standard_normal((150, 6))
        y = (rng.random(150) < 1.0 / (1.0 + np.exp(-X @ theta))).astype(float)
        tasks.append(TaskData(f"task{m}", X, y))
    selection = select_rank(tasks, [1, 2, 3], 1.0 / 150)
    assert selection.rank == 1


def test_select_rank_needs_labels_in_every_fold():
    _, tasks = planted_tasks(4, 1, 2, 20, seed=21)
    tasks.append(TaskData("coherence", np.ones((2, 4)), np.array([1.0, 0.0])))
    with pytest.raises(InsufficientDataError, match="task 'coherence' has 2 labels"):
        select_rank(tasks, [1], 0.1, n_folds=3)


@pytest.mark.parametrize(
    ("candidates", "n_folds", "fragment"),
    [
        ([], 3, "candidates"),
        ([0, 1], 3, "candidates"),
        (["a"], 3, "candidates"),
        ([1.5], 3, "candidates"),
        ([1], 1, "n_folds"),
    ],
)
def test_select_rank_rejects_invalid_arguments(candidates, n_folds, fragment):
    _, tasks = planted_tasks(4, 1, 2, 20, seed=22)
    with pytest.raises(InvalidInputError, match=fragment):
        select_rank(tasks, candidates, 0.1, n_folds=n_folds)


# ---------------------------------------------------------------------------
# Scale invariance, iterables and argument types


@pytest.mark.parametrize("rank", [2, 5])
def test_small_feature_scale_does_not_stop_early(rank):
    # Features times c with ridge times c^2 give the same objective in
    # Theta / c, so the estimate must scale by 1 / c instead of staying at 0.
    _, tasks = planted_tasks(6, 2, 5, 200, seed=31)
    ridge = 0.01
    base = fit_lowrank(tasks, rank, ridge)
    factor = 1e-6
    scaled_tasks = [TaskData(t.name, t.X * factor, t.y) for t in tasks]
    scaled = fit_lowrank(scaled_tasks, rank, ridge * factor**2)
    assert base.converged
    assert scaled.converged
    assert scaled.n_iter > 0
    error = np.max(np.abs(scaled.thetas * factor - base.thetas))
    assert error <= 1e-3 * np.max(np.abs(base.thetas))


def test_fit_lowrank_accepts_generator():
    _, tasks = planted_tasks(6, 2, 4, 80, seed=32)
    from_list = fit_lowrank(tasks, 2, 0.05)
    from_generator = fit_lowrank((task for task in tasks), 2, 0.05)
    assert from_generator.task_names == from_list.task_names
    assert_allclose(from_generator.thetas, from_list.thetas, rtol=1e-12)


def test_select_rank_accepts_generator():
    _, tasks = planted_tasks(5, 1, 3, 60, seed=33)
    from_list = select_rank(tasks, [1, 2], 0.05, seed=1)
    from_generator = select_rank((task for task in tasks), iter([1, 2]), 0.05, seed=1)
    assert from_generator.rank == from_list.rank
    assert from_generator.heldout_log_likelihood == from_list.heldout_log_likelihood


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None, True])
def test_select_rank_rejects_invalid_seed(seed):
    _, tasks = planted_tasks(5, 1, 3, 30, seed=34)
    with pytest.raises(InvalidInputError, match="seed"):
        select_rank(tasks, [1], 0.05, seed=seed)


@pytest.mark.parametrize("candidates", [3, [1.5], ["a"], [True]])
def test_select_rank_rejects_invalid_candidates(candidates):
    _, tasks = planted_tasks(5, 1, 3, 30, seed=35)
    with pytest.raises(InvalidInputError, match="candidates"):
        select_rank(tasks, candidates, 0.05)
