"""Tests of the confidence radius and the pessimistic action choice (eqs. 3.3-3.4)."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import optimize, stats

from solvers.errors import InvalidInputError
from solvers.policy import choose_actions, confidence_radius


def random_instance(seed, n_contexts=3, n_actions=3, d=3):
    rng = np.random.default_rng(seed)
    contexts = [rng.normal(size=(n_actions, d)) for _ in range(n_contexts)]
    theta = rng.normal(size=d)
    B = rng.normal(size=(d, d))
    Lambda = B @ B.T / d + 0.3 * np.eye(d)
    radius = float(rng.uniform(0.2, 3.0))
    return contexts, theta, Lambda, radius


def worst_case_value(v, theta, Lambda, radius):
    return v @ theta - radius * math.sqrt(v @ np.linalg.solve(Lambda, v))


def brute_force(contexts, theta, Lambda, radius):
    """Return the best worst-case value over all deterministic policies."""
    best = -math.inf
    for actions in itertools.product(*[range(len(c)) for c in contexts]):
        v = np.mean([c[a] for c, a in zip(contexts, actions, strict=True)], axis=0)
        best = max(best, worst_case_value(v, theta, Lambda, radius))
    return best


def test_confidence_radius_rule():
    expected = math.sqrt(stats.chi2.ppf(0.95, df=3) / 400)
    assert confidence_radius(400, 3) == pytest.approx(expected)
    assert confidence_radius(400, 3, 0.95, 2.0) == pytest.approx(2 * expected)
    assert confidence_radius(100, 3) == pytest.approx(2 * expected)
    assert confidence_radius(400, 3, confidence_level=0.99) > expected
    assert confidence_radius(400, 3, scale=0.0) == 0.0


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ((0.0, 3), "effective_labels"),
        ((math.inf, 3), "effective_labels"),
        ((10.0, 0), "rank"),
        ((10.0, 2.5), "rank"),
        ((10.0, 2, 1.0), "confidence_level"),
        ((10.0, 2, 0.0), "confidence_level"),
        ((10.0, 2, 0.9, -1.0), "scale"),
        ((10.0, 2, 0.9, math.nan), "scale"),
    ],
)
def test_confidence_radius_rejects_invalid_input(arguments, argument):
    with pytest.raises(InvalidInputError, match=argument):
        confidence_radius(*arguments)


@pytest.mark.parametrize("seed", range(5))
def test_closed_form_worst_case_matches_numeric_minimum(seed):
    rng = np.random.default_rng(seed)
    d = 4
    B = rng.normal(size=(d, d))
    Lambda = B @ B.T / d + 0.3 * np.eye(d)
    theta = rng.normal(size=d)
    v = rng.normal(size=d)
    radius = 1.3
    numeric = optimize.minimize(
        lambda t: v @ t,
        theta,
        jac=lambda t: v,
        method="SLSQP",
        constraints=[
            {
                "type": "ineq",
                "fun": lambda t: radius**2 - (t - theta) @ Lambda @ (t - theta),
            }
        ],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert numeric.fun == pytest.approx(
        worst_case_value(v, theta, Lambda, radius), abs=1e-7
    )
    # The one-context lower bound is this closed form.
    result = choose_actions(
        [v[None, :]], theta, Lambda, radius, mode="lower_confidence_bound"
    )
    assert result.lower_bounds[0] == pytest.approx(numeric.fun, abs=1e-7)


@pytest.mark.parametrize("seed", range(40))
def test_pessimistic_matches_brute_force(seed):
    rng = np.random.default_rng(1000 + seed)
    contexts, theta, Lambda, radius = random_instance(
        seed, int(rng.integers(2, 5)), int(rng.integers(2, 4)), int(rng.integers(2, 5))
    )
    result = choose_actions(contexts, theta, Lambda, radius)
    best = brute_force(contexts, theta, Lambda, radius)
    v = np.mean([c[a] for c, a in zip(contexts, result.actions, strict=True)], axis=0)
    assert result.value == pytest.approx(
        worst_case_value(v, theta, Lambda, radius), abs=1e-12
    )
    assert result.value == pytest.approx(best, abs=1e-9)
    # The stochastic optimum is at least the deterministic one, within the
    # certified duality gap, and the gap bound is valid.
    assert result.stochastic_value >= best - result.gap - 1e-9
    assert result.stochastic_value + result.gap >= best - 1e-12
    v_stochastic = np.mean(
        [p @ c for p, c in zip(result.probabilities, contexts, strict=True)], axis=0
    )
    assert result.stochastic_value == pytest.approx(
        worst_case_value(v_stochastic, theta, Lambda, radius), abs=1e-9
    )
    for p in result.probabilities:
        assert np.all(p >= -1e-15)
        assert p.sum() == pytest.approx(1.0)


def test_pessimistic_converges_on_tiny_instances():
    # Measured on 500 random tiny instances (2-4 contexts, 2-3 actions): 490
    # converged within max_iter=1000 and the rest stopped with gaps below 0.03.
    converged = [choose_actions(*random_instance(seed)).converged for seed in range(40)]
    assert sum(converged) >= 36


def test_rounding_without_enumeration_is_close_to_brute_force():
    # The local-search rounding is a heuristic. On 500 random tiny instances,
    # where rounding loses most, it matched the brute-force optimum 466 times.
    # Here: 30 instances, at most 5 misses, never below the LCB policy.
    misses = 0
    for seed in range(30):
        contexts, theta, Lambda, radius = random_instance(seed)
        result = choose_actions(contexts, theta, Lambda, radius, max_enumerated=0)
        best = brute_force(contexts, theta, Lambda, radius)
        misses += int(result.value < best - 1e-9)
        assert result.value <= best + 1e-12
        lcb = choose_actions(
            contexts, theta, Lambda, radius, mode="lower_confidence_bound"
        )
        assert result.value >= lcb.value - 1e-12
    assert misses <= 5


def test_stochastic_policy_can_beat_deterministic():
    # One context whose two actions differ only along an uncertain coordinate:
    # each alone is worth 1 - 0.5 sqrt(5) < 0, the 50/50 mix 1 - 0.5 = 0.5.
    contexts = [np.array([[1.0, 2.0], [1.0, -2.0]])]
    theta = np.array([1.0, 0.0])
    Lambda = np.eye(2)
    result = choose_actions(contexts, theta, Lambda, 0.5)
    assert result.converged
    assert result.stochastic_value == pytest.approx(0.5, abs=1e-6)
    np.testing.assert_allclose(result.probabilities[0], [0.5, 0.5], atol=1e-4)
    assert result.value == pytest.approx(1.0 - 0.5 * math.sqrt(5.0))
    assert result.value == pytest.approx(brute_force(contexts, theta, Lambda, 0.5))


def test_lower_confidence_bound_matches_per_context_formula():
    contexts, theta, Lambda, radius = random_instance(3, n_contexts=6, n_actions=4, d=5)
    result = choose_actions(
        contexts, theta, Lambda, radius, mode="lower_confidence_bound"
    )
    inverse = np.linalg.inv(Lambda)
    for s, features in enumerate(contexts):
        bounds = features @ theta - radius * np.sqrt(
            np.einsum("ad,de,ae->a", features, inverse, features)
        )
        assert result.actions[s] == int(np.argmax(bounds))
        assert result.lower_bounds[s] == pytest.approx(bounds.max())
        assert result.estimates[s] == pytest.approx(features[result.actions[s]] @ theta)
        np.testing.assert_array_equal(
            result.probabilities[s], np.eye(4)[result.actions[s]]
        )
    assert result.converged
    assert result.n_iter == 0


def test_greedy_and_zero_radius():
    contexts, theta, Lambda, radius = random_instance(4, n_contexts=5, n_actions=3, d=3)
    greedy = choose_actions(contexts, theta, Lambda, radius, mode="greedy")
    expected = [int(np.argmax(c @ theta)) for c in contexts]
    assert greedy.actions.tolist() == expected
    for mode in ["pessimistic", "lower_confidence_bound"]:
        result = choose_actions(contexts, theta, Lambda, 0.0, mode=mode)
        assert result.actions.tolist() == expected
        assert result.value == pytest.approx(
            np.mean([c[a] @ theta for c, a in zip(contexts, expected, strict=True)])
        )


def test_references_change_choices():
    # Action 0 has the larger estimate but lies far along the uncertain
    # direction. Measured against action 0 itself it carries no uncertainty.
    features = np.array([[2.0, 3.0], [1.5, 0.0]])
    theta = np.array([1.0, 0.0])
    Lambda = np.diag([1.0, 0.01])
    radius = 0.5
    plain = choose_actions(
        [features], theta, Lambda, radius, mode="lower_confidence_bound"
    )
    assert plain.actions.tolist() == [1]

    anchored = choose_actions(
        [features], theta, Lambda, radius, mode="lower_confidence_bound", references=[0]
    )
    assert anchored.actions.tolist() == [0]
    assert anchored.lower_bounds[0] == 0.0

    mean = choose_actions(
        [features],
        theta,
        Lambda,
        radius,
        mode="lower_confidence_bound",
        references=["mean"],
    )
    shifted = features - features.mean(axis=0)
    assert mean.estimates[0] == pytest.approx(shifted[mean.actions[0]] @ theta)
    # A shift does not change the greedy choice.
    greedy = choose_actions(
        [features], theta, Lambda, radius, mode="greedy", references=["mean"]
    )
    assert greedy.actions.tolist() == [0]


def test_single_action_contexts_and_mixed_sizes():
    rng = np.random.default_rng(9)
    contexts = [
        rng.normal(size=(1, 3)),
        rng.normal(size=(4, 3)),
        rng.normal(size=(2, 3)),
    ]
    theta = rng.normal(size=3)
    Lambda = np.eye(3)
    result = choose_actions(contexts, theta, Lambda, 0.8, references=[0, "mean", None])
    assert result.actions[0] == 0
    assert [p.shape for p in result.probabilities] == [(1,), (4,), (2,)]
    shifted = [
        contexts[0] - contexts[0][0],
        contexts[1] - contexts[1].mean(axis=0),
        contexts[2],
    ]
    assert result.value == pytest.approx(
        brute_force(shifted, theta, Lambda, 0.8), abs=1e-9
    )
    for value in [result.value, result.stochastic_value, result.gap]:
        assert math.isfinite(value)


def test_mean_reference_kink_at_zero_is_certified():
    # With mean references v = 0 is feasible, and a large radius makes it optimal.
    contexts, theta, Lambda, _ = random_instance(12, n_contexts=3, n_actions=3, d=3)
    result = choose_actions(contexts, theta, Lambda, 50.0, references=["mean"] * 3)
    assert result.stochastic_value <= 1e-12
    assert result.stochastic_value >= -1e-4
    assert result.stochastic_value + result.gap >= -1e-12


def test_large_batch_is_fast_and_consistent():
    rng = np.random.default_rng(5)
    contexts = [rng.normal(size=(5, 16)) for _ in range(300)]
    theta = rng.normal(size=16)
    Lambda = np.eye(16) + 0.1 * np.ones((16, 16))
    result = choose_actions(contexts, theta, Lambda, 0.5)
    assert result.converged, result.message
    assert result.value <= result.stochastic_value + result.gap + 1e-12
    assert result.value >= result.stochastic_value - 1e-3


def test_non_convergence_is_reported():
    contexts, theta, Lambda, _ = random_instance(12, n_contexts=3, n_actions=3, d=3)
    result = choose_actions(
        contexts, theta, Lambda, 50.0, references=["mean"] * 3, max_iter=1, tol=1e-12
    )
    assert not result.converged
    assert "max_iter=1" in result.message


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"contexts": []}, "at least one context"),
        (
            {"contexts": [np.zeros((2, 3)), np.zeros((2, 4))]},
            "context 1: features have dimension 4",
        ),
        ({"contexts": [np.zeros((0, 3))]}, "context 0"),
        ({"contexts": [np.full((2, 3), np.nan)]}, "context 0"),
        ({"theta": np.zeros(2)}, "curvature must have shape"),
        ({"theta": np.full(3, np.inf)}, "theta"),
        ({"curvature": -np.eye(3)}, "positive definite"),
        ({"curvature": np.triu(np.ones((3, 3)))}, "symmetric"),
        ({"curvature": np.eye(2)}, "curvature"),
        ({"radius": -0.1}, "radius"),
        ({"radius": math.inf}, "radius"),
        ({"mode": "optimistic"}, "mode"),
        ({"references": [None]}, "references"),
        ({"references": [5, None]}, "context 0: reference index 5"),
        ({"references": [-1, None]}, "context 0: reference index -1"),
        ({"references": [None, "median"]}, "context 1: reference"),
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_enumerated": -1}, "max_enumerated"),
    ],
)
def test_choose_actions_rejects_invalid_input(change, fragment):
    arguments = {
        "contexts": [np.eye(3)[:2], np.eye(3)[1:]],
        "theta": np.ones(3),
        "curvature": np.eye(3),
        "radius": 0.5,
    }
    arguments.update(change)
    positional = [
        arguments.pop(name) for name in ["contexts", "theta", "curvature", "radius"]
    ]
    with pytest.raises(InvalidInputError, match=fragment):
        choose_actions(*positional, **arguments)


def test_choose_actions_rejects_huge_features():
    contexts = [np.array([[1e200, 0.0, 0.0], [0.0, -1e200, 0.0]])]
    with pytest.raises(InvalidInputError, match="context 0"):
        choose_actions(contexts, np.ones(3), np.eye(3), 0.5)


@pytest.mark.parametrize("mode", ["pessimistic", "lower_confidence_bound", "greedy"])
def test_choose_actions_result_is_json_ready(mode):
    rng = np.random.default_rng(5)
    contexts = [rng.normal(size=(3, 3)) for _ in range(4)]
    curvature = np.diag([1.0, 1.0, 1e-12])
    result = choose_actions(
        contexts, np.zeros(3), curvature, 1e300, mode=mode, max_enumerated=0
    )
    assert type(result.converged) is bool
    assert math.isfinite(result.value)
    assert math.isfinite(result.gap)
    json.dumps({"converged": result.converged, "gap": result.gap})
