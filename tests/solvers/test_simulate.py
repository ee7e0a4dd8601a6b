"""Tests of the planted-instance simulator and the evaluation measures."""

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

from solvers.errors import InvalidInputError
from solvers.simulate import (
    estimation_error,
    make_contexts,
    make_planted_instance,
    min_l1_representation,
    suboptimality,
)


@pytest.fixture(scope="module")
def instance():
    return make_planted_instance(12, 3, 8, n_relevant=3, logit_std=1.5, seed=3)


def test_basis_is_orthonormal(instance):
    gram = instance.basis.T @ instance.basis
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-12)


def test_parameters_lie_in_subspace(instance):
    projector = instance.basis @ instance.basis.T
    np.testing.assert_allclose(
        projector @ instance.source_thetas, instance.source_thetas, atol=1e-12
    )
    np.testing.assert_allclose(
        projector @ instance.target_theta, instance.target_theta, atol=1e-12
    )


def test_target_is_relevance_mixture(instance):
    np.testing.assert_allclose(
        instance.source_thetas @ instance.relevance, instance.target_theta, atol=1e-12
    )
    assert np.count_nonzero(instance.relevance) == 3


def test_logit_std_matches_request(instance):
    for task in [0, 5, "target"]:
        assert instance.logit_std(task) == pytest.approx(1.5, rel=1e-12)
    data = instance.sample("target", 100_000, rng=0)
    assert np.std(data.X @ instance.target_theta) == pytest.approx(1.5, rel=0.02)


def test_same_seed_gives_same_instance():
    first = make_planted_instance(10, 2, 5, seed=7)
    second = make_planted_instance(10, 2, 5, seed=7)
    other = make_planted_instance(10, 2, 5, seed=8)
    np.testing.assert_array_equal(first.source_thetas, second.source_thetas)
    np.testing.assert_array_equal(first.relevance, second.relevance)
    assert not np.allclose(first.source_thetas, other.source_thetas)


def test_given_relevance_is_used_unchanged():
    nu = np.array([1.0, -0.5, 0.0, 0.0])
    planted = make_planted_instance(6, 2, 4, relevance=nu, seed=0)
    np.testing.assert_array_equal(planted.relevance, nu)
    np.testing.assert_allclose(
        planted.target_theta,
        planted.source_thetas[:, 0] - 0.5 * planted.source_thetas[:, 1],
    )


def test_labels_follow_bradley_terry(instance):
    data = instance.sample(2, 200_000, rng=1)
    logits = data.X @ instance.source_thetas[:, 2]
    assert data.name == "source_2"
    assert set(np.unique(data.y)) <= {0.0, 1.0}
    # Calibration: within logit bins, the label mean matches the mean sigmoid.
    edges = np.quantile(logits, np.linspace(0, 1, 6))
    bins = np.clip(np.searchsorted(edges, logits, side="right") - 1, 0, 4)
    for b in range(5):
        inside = bins == b
        expected = np.mean(1.0 / (1.0 + np.exp(-logits[inside])))
        assert data.y[inside].mean() == pytest.approx(expected, abs=0.01)


def test_sample_sources_uses_counts(instance):
    tasks = instance.sample_sources([0, 1, 2, 3, 4, 5, 6, 7], rng=0)
    assert [task.n for task in tasks] == list(range(8))
    assert [task.name for task in tasks] == instance.source_names


def test_fisher_information_matches_monte_carlo(instance):
    data = instance.sample("target", 400_000, rng=2)
    curvature = 0.25 / np.cosh(0.5 * (data.X @ instance.target_theta)) ** 2
    monte_carlo = (data.X * curvature[:, None]).T @ data.X / data.n
    exact = instance.fisher_information("target")
    assert np.abs(exact - monte_carlo).max() < 0.01 * np.abs(exact).max()


def test_fisher_information_of_zero_parameter_is_quarter_identity():
    planted = make_planted_instance(5, 1, 2, relevance=[0.0, 0.0], feature_scale=2.0)
    np.testing.assert_allclose(
        planted.fisher_information("target", ridge=0.5), (4.0 * 0.25 + 0.5) * np.eye(5)
    )


def test_fisher_information_of_sources_averages(instance):
    weights = np.arange(1.0, 9.0)
    mixed = instance.fisher_information("sources", weights=weights)
    expected = (
        sum(w * instance.fisher_information(m) for m, w in enumerate(weights))
        / weights.sum()
    )
    np.testing.assert_allclose(mixed, expected, atol=1e-14)


def test_estimation_error_known_answer():
    H = np.diag([4.0, 1.0])
    assert estimation_error([1.0, 1.0], [0.0, 0.0], H) == pytest.approx(np.sqrt(5.0))
    assert estimation_error([2.0, 3.0], [2.0, 3.0], H) == 0.0


def test_estimation_error_rejects_mismatched_shapes():
    with pytest.raises(InvalidInputError, match="expected vectors"):
        estimation_error([1.0, 2.0], [1.0, 2.0], np.eye(3))


def test_suboptimality_known_answer():
    contexts = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 2.0], [0.0, 0.0]])]
    theta = np.array([1.0, 3.0])
    # Best rewards: 3 and 8. Choosing actions 0 and 1 gives 1 and 0.
    assert suboptimality([0, 1], contexts, theta) == pytest.approx((2.0 + 8.0) / 2)
    assert suboptimality([1, 0], contexts, theta) == 0.0
    stochastic = [np.array([0.5, 0.5]), np.array([1.0, 0.0])]
    assert suboptimality(stochastic, contexts, theta) == pytest.approx(0.5)


def test_suboptimality_rejects_bad_action():
    contexts = [np.eye(2)]
    with pytest.raises(InvalidInputError, match="context 0"):
        suboptimality([2], contexts, np.ones(2))


def test_contexts_have_training_difference_distribution(instance):
    contexts = make_contexts(instance, 4000, 2, rng=0, offset_scale=3.0)
    differences = np.array([c[0] - c[1] for c in contexts])
    assert len(contexts) == 4000
    assert contexts[0].shape == (2, 12)
    assert np.var(differences) == pytest.approx(1.0, rel=0.03)
    # The offset is shared by the actions of a context, so it shows in sums.
    sums = np.array([c[0] + c[1] for c in contexts])
    assert np.var(sums) == pytest.approx(4 * 9.0 + 1.0, rel=0.05)


def _brute_force_min_l1(thetas, target):
    """Smallest l1 norm over all bases of k columns (an LP optimum is a vertex)."""
    k = np.linalg.matrix_rank(thetas)
    best = np.inf
    for columns in itertools.combinations(range(thetas.shape[1]), k):
        sub = thetas[:, columns]
        if np.linalg.matrix_rank(sub) < k:
            continue
        coefficients, *_ = np.linalg.lstsq(sub, target, rcond=None)
        if np.linalg.norm(sub @ coefficients - target) < 1e-8:
            best = min(best, np.abs(coefficients).sum())
    return best


def test_min_l1_matches_brute_force(instance):
    representation = min_l1_representation(
        instance.source_thetas, instance.target_theta
    )
    expected = _brute_force_min_l1(instance.source_thetas, instance.target_theta)
    assert representation.l1_norm == pytest.approx(expected, rel=1e-7)
    assert representation.residual < 1e-8
    assert representation.l1_norm <= np.abs(instance.relevance).sum() + 1e-9


def test_min_l1_single_task_target():
    planted = make_planted_instance(8, 3, 5, relevance=[0, 0, 1.0, 0, 0], seed=4)
    representation = min_l1_representation(planted.source_thetas, planted.target_theta)
    np.testing.assert_allclose(representation.relevance, [0, 0, 1.0, 0, 0], atol=1e-9)
    assert representation.support == [2]
    # Equal norms: any other representation is strictly longer (triangle inequality).
    assert representation.margin > 0.0


def test_min_l1_margin_matches_excluded_refit():
    thetas = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    target = np.array([1.0, 1.0])
    representation = min_l1_representation(thetas, target)
    np.testing.assert_allclose(representation.relevance, [0.0, 0.0, 1.0], atol=1e-9)
    # Without task 2 the only representation is (1, 1), which costs twice as much.
    assert representation.margin == pytest.approx(1.0)


def test_min_l1_forced_support_has_no_margin():
    thetas = np.eye(2)
    representation = min_l1_representation(thetas, np.array([1.0, -2.0]))
    assert representation.l1_norm == pytest.approx(3.0)
    assert representation.margin is None


def test_min_l1_agrees_with_generic_solver(instance):
    # Smooth the l1 norm and solve the equality-constrained problem generically.
    thetas, target = instance.source_thetas, instance.target_theta
    representation = min_l1_representation(thetas, target)
    result = minimize(
        lambda nu: np.sum(np.sqrt(nu**2 + 1e-10)),
        x0=np.linalg.lstsq(thetas, target, rcond=None)[0],
        constraints=[
            {"type": "eq", "fun": lambda nu: instance.basis.T @ (thetas @ nu - target)}
        ],
        method="SLSQP",
        options={"maxiter": 500, "ftol": 1e-12},
    )
    assert result.fun == pytest.approx(representation.l1_norm, rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dimension": 2, "rank": 3, "n_sources": 4}, "rank <= dimension"),
        ({"dimension": 5, "rank": 2, "n_sources": 0}, "at least one source"),
        ({"dimension": 5, "rank": 2, "n_sources": 3, "n_relevant": 4}, "n_relevant"),
        ({"dimension": 5, "rank": 2, "n_sources": 3, "logit_std": 0.0}, "logit_std"),
        ({"dimension": 5, "rank": 2, "n_sources": 3, "relevance": [1.0]}, "3 entries"),
    ],
)
def test_make_planted_instance_rejects_invalid_sizes(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        make_planted_instance(**kwargs)


def test_unknown_task_is_rejected(instance):
    with pytest.raises(InvalidInputError, match="unknown task 'coherence'"):
        instance.sample("coherence", 3)
    with pytest.raises(InvalidInputError, match="out of range"):
        instance.sample(8, 3)


@pytest.mark.parametrize(
    "arguments, name",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"dimension": 6.0}, "dimension"),
        ({"dimension": "6"}, "dimension"),
        ({"rank": 2.5}, "rank"),
        ({"rank": True}, "rank"),
        ({"n_sources": None}, "n_sources"),
    ],
)
def test_planted_instance_rejects_invalid_integers(arguments, name):
    values = {"dimension": 6, "rank": 2, "n_sources": 4, "seed": 0} | arguments
    with pytest.raises(InvalidInputError, match=name):
        make_planted_instance(
            values["dimension"],
            values["rank"],
            values["n_sources"],
            n_relevant=2,
            seed=values["seed"],
        )


def test_planted_instance_accepts_numpy_integers():
    instance = make_planted_instance(
        np.int64(6), np.int32(2), np.int64(4), n_relevant=2, seed=np.int64(5)
    )
    assert instance.dimension == 6
    assert instance.seed == 5
