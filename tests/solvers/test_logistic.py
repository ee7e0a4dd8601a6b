"""Tests of the logistic likelihood and the single-task ridge logistic fit.

Reference values come from closed forms, finite differences of an objective written
out here with plain numpy, scikit-learn's LogisticRegression and
scipy.optimize.minimize.
"""

import numpy as np
import pytest
import scipy.optimize
from numpy.testing import assert_allclose
from sklearn.linear_model import LogisticRegression

from solvers.errors import InsufficientDataError, InvalidInputError
from solvers.logistic import (
    fit_ridge_logistic,
    log_sigmoid,
    negative_log_likelihood,
    sigmoid,
    sigmoid_derivative,
)


def reference_objective(theta, X, y, ridge):
    """sum_i log(1 + exp(t_i)) - y_i t_i + ridge * n * ||theta||^2, moderate t only."""
    t = X @ theta
    return np.sum(np.log1p(np.exp(t)) - y * t) + ridge * len(y) * theta @ theta


def reference_gradient(theta, X, y, ridge):
    t = X @ theta
    return X.T @ (1.0 / (1.0 + np.exp(-t)) - y) + 2.0 * ridge * len(y) * theta


def numerical_gradient(function, x, step=1e-5):
    """Five-point central differences."""
    gradient = np.zeros_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = step
        gradient[j] = (
            -function(x + 2 * e)
            + 8 * function(x + e)
            - 8 * function(x - e)
            + function(x - 2 * e)
        ) / (12 * step)
    return gradient


def logistic_data(n, d, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    theta = rng.standard_normal(d) * scale
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-X @ theta))).astype(float)
    return X, y


# ---------------------------------------------------------------------------
# Likelihood pieces


def test_log_sigmoid_extreme_logits():
    values = log_sigmoid([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    assert np.all(np.isfinite(values))
    assert values[0] == pytest.approx(-1000.0)
    assert values[1] == pytest.approx(-40.0 - np.exp(-40.0), rel=1e-15)
    assert values[2] == pytest.approx(-np.log(2.0))
    # log(sigmoid(40)) = -log1p(exp(-40)), which plain log(sigmoid) rounds to 0.
    assert values[3] == pytest.approx(-np.exp(-40.0), rel=1e-12)
    assert values[4] == 0.0


def test_sigmoid_matches_closed_form():
    t = np.linspace(-30.0, 30.0, 61)
    assert_allclose(sigmoid(t), 1.0 / (1.0 + np.exp(-t)), rtol=1e-14)
    assert sigmoid([-1000.0])[0] == 0.0
    assert sigmoid([1000.0])[0] == 1.0


def test_sigmoid_derivative_matches_finite_differences():
    t = np.linspace(-8.0, 8.0, 33)
    step = 1e-5
    numerical = (sigmoid(t + step) - sigmoid(t - step)) / (2 * step)
    assert_allclose(sigmoid_derivative(t), numerical, rtol=1e-7, atol=1e-10)
    assert sigmoid_derivative([0.0])[0] == pytest.approx(0.25)


def test_negative_log_likelihood_known_values():
    # At t = 0 every label, hard or soft, costs log 2.
    assert negative_log_likelihood(np.zeros(4), [0.0, 1.0, 0.5, 0.3]) == pytest.approx(
        4 * np.log(2.0)
    )
    t = np.array([-2.0, 0.5, 3.0])
    y = np.array([0.0, 0.25, 1.0])
    p = 1.0 / (1.0 + np.exp(-t))
    expected = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert negative_log_likelihood(t, y) == pytest.approx(expected, rel=1e-14)


def test_negative_log_likelihood_large_logits_stay_finite():
    value = negative_log_likelihood([800.0, -800.0], [0.0, 1.0])
    assert value == pytest.approx(1600.0)


@pytest.mark.parametrize(
    ("t", "y", "fragment"),
    [
        ([0.0, np.nan], [1.0, 0.0], "NaN"),
        ([0.0, 1.0], [1.0, np.inf], "NaN"),
        ([0.0, 1.0], [1.0], "shapes"),
        ([0.0, 1.0], [1.0, 1.5], "[0, 1]"),
    ],
)
def test_negative_log_likelihood_rejects_invalid_input(t, y, fragment):
    with pytest.raises(InvalidInputError, match=fragment.replace("[", r"\[")):
        negative_log_likelihood(t, y)


@pytest.mark.parametrize("function", [log_sigmoid, sigmoid, sigmoid_derivative])
def test_elementwise_functions_reject_nan(function):
    with pytest.raises(InvalidInputError, match="NaN"):
        function([0.0, np.nan])


# ---------------------------------------------------------------------------
# fit_ridge_logistic


def test_fit_gradient_vanishes_by_finite_differences():
    X, y = logistic_data(200, 5, seed=0)
    ridge = 0.01
    fit = fit_ridge_logistic(X, y, ridge)
    assert fit.converged
    gradient = numerical_gradient(
        lambda th: reference_objective(th, X, y, ridge), fit.theta
    )
    assert np.linalg.norm(gradient) < 1e-6
    assert fit.objective == pytest.approx(reference_objective(fit.theta, X, y, ridge))


def test_fit_matches_sklearn():
    X, y = logistic_data(500, 6, seed=1)
    ridge = 0.003
    fit = fit_ridge_logistic(X, y, ridge)
    # sklearn minimises C * sum_i loss_i + ||theta||^2 / 2, so C = 1 / (2 ridge n).
    reference = LogisticRegression(
        C=1.0 / (2.0 * ridge * len(y)), fit_intercept=False, tol=1e-12, max_iter=10_000
    ).fit(X, y)
    assert_allclose(fit.theta, reference.coef_.ravel(), rtol=1e-6, atol=1e-8)


def test_fit_with_basis_matches_scipy():
    X, y = logistic_data(300, 8, seed=2)
    rng = np.random.default_rng(3)
    U = np.linalg.qr(rng.standard_normal((8, 3)))[0]
    ridge = 0.02
    fit = fit_ridge_logistic(X, y, ridge, basis=U)
    reference = scipy.optimize.minimize(
        lambda w: reference_objective(U @ w, X, y, ridge),
        np.zeros(3),
        jac=lambda w: U.T @ reference_gradient(U @ w, X, y, ridge),
        method="BFGS",
        options={"gtol": 1e-12},
    )
    assert fit.converged
    assert_allclose(fit.theta, U @ reference.x, rtol=1e-6, atol=1e-8)
    assert fit.objective == pytest.approx(reference.fun, rel=1e-12)


def test_fit_with_theta0_reaches_same_optimum():
    X, y = logistic_data(200, 4, seed=4)
    cold = fit_ridge_logistic(X, y, 0.01)
    warm = fit_ridge_logistic(X, y, 0.01, theta0=np.full(4, 3.0))
    assert_allclose(warm.theta, cold.theta, rtol=1e-8, atol=1e-10)


def test_fit_reports_max_iter():
    X, y = logistic_data(200, 4, seed=5, scale=3.0)
    fit = fit_ridge_logistic(X, y, 1e-4, max_iter=1)
    assert not fit.converged
    assert fit.n_iter == 1
    assert "max_iter=1" in fit.message
    assert np.all(np.isfinite(fit.theta))


# ---------------------------------------------------------------------------
# Degenerate inputs


def test_separable_data_with_ridge_is_finite_and_converges():
    X, _ = logistic_data(50, 3, seed=6)
    y = (X[:, 0] > 0).astype(float)
    fit = fit_ridge_logistic(X, y, 1e-3)
    assert fit.converged
    assert np.all(np.isfinite(fit.theta))
    gradient = numerical_gradient(
        lambda th: reference_objective(th, X, y, 1e-3), fit.theta
    )
    assert np.linalg.norm(gradient) < 1e-5


def test_separable_data_without_ridge_reports_no_maximiser():
    X, _ = logistic_data(50, 3, seed=6)
    y = (X[:, 0] > 0).astype(float)
    fit = fit_ridge_logistic(X, y, 0.0, task="coherence")
    assert not fit.converged
    assert np.all(np.isfinite(fit.theta))
    assert np.isfinite(fit.objective)
    assert "task 'coherence'" in fit.message
    assert "separable" in fit.message


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_all_equal_labels_give_finite_fit(label):
    X, _ = logistic_data(30, 4, seed=7)
    y = np.full(30, label)
    fit = fit_ridge_logistic(X, y, 0.01)
    assert fit.converged
    assert np.all(np.isfinite(fit.theta))
    # Every logit moves towards the shared label.
    sign = 1.0 if label == 1.0 else -1.0
    assert np.mean(sign * (X @ fit.theta) > 0) > 0.5


@pytest.mark.parametrize("n", [1, 2, 3])
def test_few_labels_give_finite_fit(n):
    X, y = logistic_data(n, 5, seed=8)
    fit = fit_ridge_logistic(X, y, 0.1)
    assert fit.converged
    assert np.all(np.isfinite(fit.theta))
    gradient = numerical_gradient(
        lambda th: reference_objective(th, X, y, 0.1), fit.theta
    )
    assert np.linalg.norm(gradient) < 1e-6


def test_half_labels_give_zero_estimate():
    # With y = 1/2 everywhere the gradient X^T (sigmoid(X theta) - 1/2) vanishes
    # at theta = 0, which is the unique optimum for any ridge >= 0 when X has
    # full column rank.
    X, _ = logistic_data(40, 3, seed=9)
    for ridge in (0.0, 0.1):
        fit = fit_ridge_logistic(X, np.full(40, 0.5), ridge)
        assert fit.converged
        assert_allclose(fit.theta, 0.0, atol=1e-12)


def test_fractional_labels_match_scipy():
    X, _ = logistic_data(60, 3, seed=10)
    y = np.random.default_rng(11).uniform(0.0, 1.0, 60)
    fit = fit_ridge_logistic(X, y, 0.0)
    reference = scipy.optimize.minimize(
        lambda th: reference_objective(th, X, y, 0.0),
        np.zeros(3),
        jac=lambda th: reference_gradient(th, X, y, 0.0),
        method="BFGS",
        options={"gtol": 1e-12},
    )
    assert fit.converged
    assert_allclose(fit.theta, reference.x, rtol=1e-7, atol=1e-9)


def test_no_labels_raise_insufficient_data():
    with pytest.raises(InsufficientDataError, match="task 'coherence' has no labels"):
        fit_ridge_logistic(np.zeros((0, 3)), np.zeros(0), 0.1, task="coherence")


@pytest.mark.parametrize(
    ("X", "y", "ridge", "kwargs", "fragment"),
    [
        (np.array([[np.nan, 1.0]]), np.array([1.0]), 0.1, {}, "NaN"),
        (np.array([[0.0, 1.0]]), np.array([np.inf]), 0.1, {}, "labels"),
        (np.array([[0.0, 1.0]]), np.array([2.0]), 0.1, {}, "labels"),
        (np.array([0.0, 1.0]), np.array([1.0, 0.0]), 0.1, {}, "2-D"),
        (np.ones((3, 2)), np.ones(2), 0.1, {}, "expected 3 labels"),
        (np.ones((3, 2)), np.ones(3), -1.0, {}, "ridge"),
        (np.ones((3, 2)), np.ones(3), np.nan, {}, "ridge"),
        (np.ones((3, 2)), np.ones(3), 0.1, {"basis": np.ones((2, 1))}, "orthonormal"),
        (np.ones((3, 2)), np.ones(3), 0.1, {"basis": np.eye(3)}, "basis"),
        (np.ones((3, 2)), np.ones(3), 0.1, {"theta0": np.ones(3)}, "theta0"),
        (np.ones((3, 2)), np.ones(3), 0.1, {"theta0": [np.nan, 0.0]}, "theta0"),
        (np.ones((3, 2)), np.ones(3), 0.1, {"tol": 0.0}, "tol"),
        (np.ones((3, 2)), np.ones(3), 0.1, {"max_iter": 0}, "max_iter"),
    ],
)
def test_invalid_input_is_rejected_naming_task(X, y, ridge, kwargs, fragment):
    with pytest.raises(InvalidInputError) as error:
        fit_ridge_logistic(X, y, ridge, task="coherence", **kwargs)
    assert "task 'coherence'" in str(error.value)
    assert fragment in str(error.value)


# ---------------------------------------------------------------------------
# Invariance of the stopping rule to the feature scale


@pytest.mark.parametrize("factor", [1e-8, 1e-4, 1e4])
def test_rescaled_features_rescale_estimate(factor):
    # Non-separable labels, so the ridge-0 maximiser exists. Scaling X by c
    # scales it by 1 / c, and the fit must not stop at the start because the
    # gradient is small in absolute terms.
    X, y = logistic_data(40, 4, seed=21)
    base = fit_ridge_logistic(X, y, 0.0)
    scaled = fit_ridge_logistic(X * factor, y, 0.0)
    assert base.converged
    assert scaled.converged
    assert scaled.n_iter > 0
    assert_allclose(scaled.theta * factor, base.theta, rtol=1e-8)
    assert scaled.gradient_norm <= 1e-8


def test_rescaled_features_with_ridge_rescale_estimate():
    # With ridge * c^2 the objective in c X is the same function of theta / c.
    X, y = logistic_data(60, 3, seed=22)
    base = fit_ridge_logistic(X, y, 0.05)
    scaled = fit_ridge_logistic(X * 1e-4, y, 0.05 * 1e-8)
    assert scaled.converged
    assert_allclose(scaled.theta * 1e-4, base.theta, rtol=1e-8)
