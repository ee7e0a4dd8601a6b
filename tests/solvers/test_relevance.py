"""Tests of the curvature matrix (eq. 3.3) and the relevance Lasso (eq. 3.12)."""

import math

import numpy as np
import pytest
from scipy import optimize

from solvers import relevance as relevance_module
from solvers.data import TaskData
from solvers.errors import InsufficientDataError, InvalidInputError
from solvers.relevance import (
    curvature_matrix,
    default_ellipsoid_radius,
    default_lasso_penalty,
    solve_relevance_lasso,
)


def random_curvature(rng, d):
    A = rng.normal(size=(d, d))
    return A @ A.T / d + 0.2 * np.eye(d)


def random_problem(seed, d=6, n_tasks=5):
    rng = np.random.default_rng(seed)
    Theta = rng.normal(size=(d, n_tasks))
    theta = rng.normal(size=d)
    Lambda = random_curvature(rng, d)
    prior = rng.uniform(0.1, 1.0, size=n_tasks)
    return Theta, theta, Lambda, prior


def objective(nu, Theta, theta, Lambda, beta):
    residual = Theta @ nu - theta
    return 0.5 * residual @ Lambda @ residual + beta * np.abs(nu).sum()


def reference_solution(Theta, theta, Lambda, beta, prior, radius, start):
    """Solve eq. 3.12 with SLSQP on the split nu = u - v, u, v >= 0."""
    n_tasks = Theta.shape[1]
    weights = np.abs(prior)

    def split_objective(uv):
        return objective(uv[:n_tasks] - uv[n_tasks:], Theta, theta, Lambda, 0.0) + (
            beta * uv.sum()
        )

    def split_gradient(uv):
        nu = uv[:n_tasks] - uv[n_tasks:]
        g = Theta.T @ Lambda @ (Theta @ nu - theta)
        return np.concatenate([g + beta, -g + beta])

    constraints = []
    if math.isfinite(radius):
        constraints.append(
            {
                "type": "ineq",
                "fun": lambda uv: (
                    radius - np.sum((uv[:n_tasks] - uv[n_tasks:]) ** 2 / weights)
                ),
            }
        )
    x0 = np.concatenate([np.maximum(start, 0), np.maximum(-start, 0)])
    result = optimize.minimize(
        split_objective,
        x0,
        jac=split_gradient,
        method="SLSQP",
        bounds=[(0, None)] * (2 * n_tasks),
        constraints=constraints,
        options={"ftol": 1e-14, "maxiter": 2000},
    )
    return result.x[:n_tasks] - result.x[n_tasks:], result.fun


def assert_kkt(result, Theta, theta, Lambda, beta, prior, radius, atol=1e-8):
    """Check the subgradient conditions with the reported multiplier."""
    nu = result.relevance
    weights = np.abs(prior)
    free = weights > 0
    assert np.all(nu[~free] == 0.0)
    gradient = Theta.T @ Lambda @ (Theta @ nu - theta)
    mu = result.multiplier
    assert mu >= 0.0
    constraint = np.sum(nu[free] ** 2 / weights[free])
    assert constraint <= radius * (1 + 1e-9) + 1e-12
    if mu > 0:
        assert result.constraint_active
        assert constraint == pytest.approx(radius, rel=1e-8)
    total = gradient[free] + 2 * mu * nu[free] / weights[free]
    nonzero = nu[free] != 0
    np.testing.assert_allclose(
        total[nonzero], -beta * np.sign(nu[free][nonzero]), atol=atol
    )
    assert np.all(np.abs(total[~nonzero]) <= beta + atol)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("radius", [math.inf, 1.0, 0.1, 0.01])
def test_lasso_satisfies_kkt_conditions(seed, radius):
    Theta, theta, Lambda, prior = random_problem(seed)
    beta = 0.3
    result = solve_relevance_lasso(Theta, theta, Lambda, beta, prior, radius)
    assert result.converged, result.message
    assert result.optimality_gap <= 1e-10
    assert_kkt(result, Theta, theta, Lambda, beta, prior, radius)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius", [math.inf, 0.5, 0.02])
def test_lasso_agrees_with_slsqp(seed, radius):
    Theta, theta, Lambda, prior = random_problem(100 + seed)
    beta = 0.2
    result = solve_relevance_lasso(Theta, theta, Lambda, beta, prior, radius)
    nu_reference, value_reference = reference_solution(
        Theta, theta, Lambda, beta, prior, radius, np.zeros(Theta.shape[1])
    )
    # Our objective is never above the reference solver's, and with Q positive
    # definite (d >= M) the minimiser is unique, so the points agree too.
    assert result.objective <= value_reference + 1e-9
    assert result.objective == pytest.approx(value_reference, rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(result.relevance, nu_reference, atol=1e-5)


def test_lasso_constraint_activity_reported():
    Theta, theta, Lambda, prior = random_problem(7)
    loose = solve_relevance_lasso(Theta, theta, Lambda, 0.1, prior, math.inf)
    assert not loose.constraint_active
    assert loose.multiplier == 0.0
    needed = np.sum(loose.relevance**2 / prior)
    tight = solve_relevance_lasso(Theta, theta, Lambda, 0.1, prior, 0.25 * needed)
    assert tight.constraint_active
    assert tight.multiplier > 0.0
    assert np.sum(tight.relevance**2 / prior) == pytest.approx(0.25 * needed, rel=1e-9)
    roomy = solve_relevance_lasso(Theta, theta, Lambda, 0.1, prior, 4 * needed)
    assert not roomy.constraint_active
    np.testing.assert_allclose(roomy.relevance, loose.relevance, atol=1e-9)


def test_lasso_zero_prior_forces_zero():
    Theta, theta, Lambda, prior = random_problem(3)
    prior = prior.copy()
    prior[[1, 3]] = 0.0
    result = solve_relevance_lasso(Theta, theta, Lambda, 0.05, prior, 2.0)
    assert result.relevance[1] == 0.0
    assert result.relevance[3] == 0.0
    assert result.converged
    assert_kkt(result, Theta, theta, Lambda, 0.05, prior, 2.0)


def test_lasso_rank_deficient_sources_agree_with_slsqp():
    # Six sources in a 2-dimensional subspace: Q is singular, the solution may
    # not be unique, so only the objective values are compared.
    rng = np.random.default_rng(11)
    basis = np.linalg.qr(rng.normal(size=(7, 2)))[0]
    Theta = basis @ rng.normal(size=(2, 6))
    theta = basis @ rng.normal(size=2)
    Lambda = random_curvature(rng, 7)
    prior = np.full(6, 1 / 6)
    for radius in [math.inf, 0.3]:
        result = solve_relevance_lasso(Theta, theta, Lambda, 0.05, prior, radius)
        assert result.converged, result.message
        assert_kkt(result, Theta, theta, Lambda, 0.05, prior, radius)
        best = min(
            reference_solution(Theta, theta, Lambda, 0.05, prior, radius, start)[1]
            for start in [np.zeros(6), result.relevance]
        )
        assert result.objective <= best + 1e-9


def smallest_l1_representation(Theta, theta):
    """Return the smallest-l1 nu with Theta nu = theta, by linear programming."""
    d, n_tasks = Theta.shape
    cost = np.ones(2 * n_tasks)
    result = optimize.linprog(
        cost,
        A_eq=np.hstack([Theta, -Theta]),
        b_eq=theta,
        bounds=[(0, None)] * (2 * n_tasks),
        method="highs",
    )
    assert result.status == 0
    return result.x[:n_tasks] - result.x[n_tasks:]


def planted_instance():
    """Return sources in a 3-dim subspace whose target has a cheap l1 representation."""
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.normal(size=(10, 3)))[0]
    # Three unit-norm sources along the basis and five short ones: any
    # representation that leans on the short ones costs much more l1 norm.
    weights = np.hstack([np.eye(3), 0.3 * rng.normal(size=(3, 5)) / np.sqrt(3)])
    Theta = basis @ weights
    nu_true = np.array([1.0, -0.6, 0.8, 0, 0, 0, 0, 0])
    theta = Theta @ nu_true
    Lambda = random_curvature(rng, 10)
    return Theta, theta, Lambda, nu_true


def test_planted_instance_has_clear_l1_margin():
    Theta, theta, _, nu_true = planted_instance()
    nu_min = smallest_l1_representation(Theta, theta)
    np.testing.assert_allclose(nu_min, nu_true, atol=1e-8)
    # The best representation that avoids source 0 costs clearly more.
    without_first = smallest_l1_representation(Theta[:, 1:], theta)
    assert np.abs(without_first).sum() > 1.5 * np.abs(nu_true).sum()


@pytest.mark.parametrize("beta", [1e-3, 1e-5])
def test_lasso_recovers_smallest_l1_representation(beta):
    Theta, theta, Lambda, nu_true = planted_instance()
    nu_min = smallest_l1_representation(Theta, theta)
    prior = np.full(8, 1 / 8)
    radius = default_ellipsoid_radius(Theta, theta, Lambda, prior)
    result = solve_relevance_lasso(Theta, theta, Lambda, beta, prior, radius)
    assert result.converged, result.message
    residual = Theta @ result.relevance - theta
    target_norm = math.sqrt(theta @ Lambda @ theta)
    assert math.sqrt(residual @ Lambda @ residual) <= 20 * beta * target_norm + 1e-9
    l1 = np.abs(result.relevance).sum()
    assert l1 <= np.abs(nu_min).sum() + 1e-9
    assert l1 >= np.abs(nu_min).sum() * (1 - 20 * beta)
    assert set(np.flatnonzero(result.relevance)) == {0, 1, 2}


def test_default_radius_keeps_planted_relevance_feasible():
    Theta, theta, Lambda, nu_true = planted_instance()
    prior = np.full(8, 1 / 8)
    radius = default_ellipsoid_radius(Theta, theta, Lambda, prior)
    assert np.sum(nu_true**2 / prior) <= radius
    assert math.isfinite(radius)
    assert radius == pytest.approx(
        2 * default_ellipsoid_radius(Theta, theta, Lambda, prior, scale=2.0)
    )


def test_default_penalty_keeps_irrelevant_tasks_at_zero():
    # Pilot estimates = truth + Gaussian noise with covariance Lambda^-1 / n,
    # the noise model the default penalty is sized for.
    Theta, theta, Lambda, nu_true = planted_instance()
    prior = np.full(8, 1 / 8)
    radius = default_ellipsoid_radius(Theta, theta, Lambda, prior)
    n_target = 400
    chol = np.linalg.cholesky(np.linalg.inv(Lambda))
    rng = np.random.default_rng(0)
    false_positives = 0
    for _ in range(40):
        noisy = theta + chol @ rng.normal(size=10) / math.sqrt(n_target)
        beta = default_lasso_penalty(Theta, Lambda, n_target)
        result = solve_relevance_lasso(Theta, noisy, Lambda, beta, prior, radius)
        false_positives += int(np.any(result.relevance[3:] != 0))
        assert np.all(result.relevance[:3] != 0)
    assert false_positives <= 4


def test_default_penalty_scaling():
    Theta, theta, Lambda, _ = planted_instance()
    small = default_lasso_penalty(Theta, Lambda, 100)
    large = default_lasso_penalty(Theta, Lambda, 400)
    assert small == pytest.approx(2 * large)
    norms = np.sqrt(np.einsum("dm,dm->m", Theta, Lambda @ Theta))
    assert small == pytest.approx(math.sqrt(2 * math.log(16) / 100) * norms.max())
    assert default_lasso_penalty(Theta, Lambda, 100, scale=3.0) == pytest.approx(
        3 * small
    )
    with_sources = default_lasso_penalty(
        Theta, Lambda, 100, source_labels=np.full(8, 50), target_theta=theta
    )
    assert with_sources > small


def test_lasso_degenerate_cases():
    Theta, theta, Lambda, prior = random_problem(2)
    zero_radius = solve_relevance_lasso(Theta, theta, Lambda, 0.1, prior, 0.0)
    assert np.all(zero_radius.relevance == 0)
    assert zero_radius.converged
    no_prior = solve_relevance_lasso(Theta, theta, Lambda, 0.1, np.zeros(5), 1.0)
    assert np.all(no_prior.relevance == 0)
    c = Theta.T @ Lambda @ theta
    huge_penalty = solve_relevance_lasso(
        Theta, theta, Lambda, np.abs(c).max() * 1.01, prior, 1.0
    )
    assert np.all(huge_penalty.relevance == 0)
    assert huge_penalty.converged
    zero_sources = solve_relevance_lasso(
        np.zeros((6, 5)), theta, Lambda, 0.1, prior, 1.0
    )
    assert np.all(zero_sources.relevance == 0)
    assert math.isfinite(zero_sources.objective)
    no_penalty = solve_relevance_lasso(Theta, theta, Lambda, 0.0, prior, math.inf)
    np.testing.assert_allclose(
        no_penalty.relevance,
        np.linalg.solve(Theta.T @ Lambda @ Theta, Theta.T @ Lambda @ theta),
        atol=1e-8,
    )


def test_lasso_reports_non_convergence():
    Theta, theta, Lambda, prior = random_problem(4, d=12, n_tasks=10)
    result = solve_relevance_lasso(Theta, theta, Lambda, 0.01, prior, 1.0, max_iter=1)
    assert not result.converged
    assert "max_iter=1" in result.message
    assert math.isfinite(result.optimality_gap)


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"source_thetas": np.zeros(3)}, "source_thetas"),
        ({"target_theta": np.zeros(5)}, "target_theta"),
        ({"target_theta": np.full(6, np.nan)}, "target_theta"),
        ({"curvature": np.ones((6, 6)) - 2 * np.eye(6)}, "curvature"),
        ({"curvature": np.triu(np.ones((6, 6)))}, "curvature"),
        ({"penalty": -1.0}, "penalty"),
        ({"penalty": math.inf}, "penalty"),
        ({"prior": np.ones(4)}, "prior"),
        ({"radius": -1.0}, "radius"),
        ({"radius": math.nan}, "radius"),
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_lasso_rejects_invalid_input(change, argument):
    Theta, theta, Lambda, prior = random_problem(0)
    arguments = {
        "source_thetas": Theta,
        "target_theta": theta,
        "curvature": Lambda,
        "penalty": 0.1,
        "prior": prior,
        "radius": 1.0,
    }
    arguments.update(change)
    with pytest.raises(InvalidInputError, match=argument):
        solve_relevance_lasso(**arguments)


def make_tasks(rng, d, sizes):
    return [
        TaskData(
            f"task{m}",
            rng.normal(size=(n, d)),
            rng.integers(0, 2, size=n).astype(float),
        )
        for m, n in enumerate(sizes)
    ]


def test_curvature_matches_outer_product_sum(monkeypatch):
    rng = np.random.default_rng(1)
    tasks = make_tasks(rng, 4, [7, 0, 12])
    thetas = rng.normal(size=(4, 3))
    expected = np.zeros((4, 4))
    for m, task in enumerate(tasks):
        for x in task.X:
            p = 1 / (1 + math.exp(-x @ thetas[:, m]))
            expected += p * (1 - p) * np.outer(x, x)
    expected = expected / 19 + 0.3 * np.eye(4)
    np.testing.assert_allclose(
        curvature_matrix(tasks, thetas, 0.3), expected, rtol=1e-12
    )
    # Row blocks smaller than a task give the same matrix.
    monkeypatch.setattr(relevance_module, "_CURVATURE_CHUNK_ROWS", 5)
    np.testing.assert_allclose(
        curvature_matrix(tasks, thetas, 0.3), expected, rtol=1e-12
    )


def test_curvature_is_finite_for_huge_logits():
    rng = np.random.default_rng(2)
    tasks = make_tasks(rng, 3, [20])
    Lambda = curvature_matrix(tasks, np.full((3, 1), 1e4), 0.0)
    assert np.all(np.isfinite(Lambda))
    np.testing.assert_allclose(Lambda, Lambda.T)


def test_curvature_rejects_invalid_input():
    rng = np.random.default_rng(3)
    tasks = make_tasks(rng, 3, [5, 5])
    with pytest.raises(InvalidInputError, match="thetas"):
        curvature_matrix(tasks, np.zeros((3, 3)), 0.1)
    with pytest.raises(InvalidInputError, match="ridge"):
        curvature_matrix(tasks, np.zeros((3, 2)), -0.1)
    with pytest.raises(InvalidInputError, match="thetas"):
        curvature_matrix(tasks, np.full((3, 2), np.nan), 0.1)
    with pytest.raises(InsufficientDataError, match="no labels"):
        curvature_matrix(make_tasks(rng, 3, [0, 0]), np.zeros((3, 2)), 0.1)


def test_lasso_handles_near_zero_prior_entry():
    Theta = np.random.default_rng(3).normal(size=(5, 4))
    theta = Theta @ np.array([1.0, 0.0, -0.5, 0.0])
    result = solve_relevance_lasso(
        Theta, theta, np.eye(5), 0.01, [1e-300, 1.0, 1.0, 1.0], 10.0
    )
    assert np.all(np.isfinite(result.relevance))
    assert result.converged is True
    assert result.optimality_gap <= 1e-10
    # The constraint allows |nu_0| <= sqrt(R * 1e-300), about 3e-150.
    assert abs(result.relevance[0]) <= math.sqrt(10.0 * 1e-300) * (1 + 1e-9)


@pytest.mark.parametrize("penalty", [0.0, 0.05])
def test_lasso_is_invariant_to_scale(penalty):
    Theta = np.random.default_rng(3).normal(size=(5, 4))
    theta = Theta @ np.array([1.0, 0.0, -0.5, 0.0])
    prior = np.ones(4)
    unit = solve_relevance_lasso(Theta, theta, np.eye(5), penalty, prior, 1e6)
    small = solve_relevance_lasso(
        Theta * 1e-6, theta * 1e-6, np.eye(5), penalty * 1e-12, prior, 1e6
    )
    assert unit.converged is True
    assert small.converged is True
    np.testing.assert_allclose(small.relevance, unit.relevance, atol=1e-8)
    if penalty == 0.0:
        np.testing.assert_allclose(
            small.relevance, [1.0, 0.0, -0.5, 0.0], atol=1e-8
        )


def test_lasso_zero_radius_reports_zero_gap():
    Theta = np.random.default_rng(3).normal(size=(5, 4))
    theta = Theta @ np.array([1.0, 0.0, -0.5, 0.0])
    result = solve_relevance_lasso(Theta, theta, np.eye(5), 0.0, np.ones(4), 0.0)
    np.testing.assert_array_equal(result.relevance, np.zeros(4))
    assert result.converged is True
    assert result.optimality_gap == 0.0
    assert result.multiplier == 0.0
    assert result.constraint_active is True


def test_curvature_rejects_overflowing_features():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 4)) * 1e200
    y = rng.uniform(size=6)
    with pytest.raises(InvalidInputError, match="'a'"):
        curvature_matrix([TaskData("a", X, y)], np.zeros((4, 1)), 0.01)
