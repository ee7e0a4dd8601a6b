"""Tests of the Algorithm 1 and Algorithm 2 drivers on planted instances."""

import json
import math

import numpy as np
import pytest
from scipy.stats import chi2

from solvers.algorithms import (
    SolverSettings,
    joint_ridge,
    plan_quotas,
    remaining_quotas,
    run_known_relevance,
    run_main,
    run_pilot,
    single_task_ridge,
)
from solvers.data import TaskData
from solvers.errors import InsufficientDataError, InvalidInputError
from solvers.logistic import fit_ridge_logistic
from solvers.simulate import (
    estimation_error,
    make_planted_instance,
    min_l1_representation,
)


def _target_error(instance, theta_hat):
    H = instance.fisher_information("target")
    return estimation_error(theta_hat, instance.target_theta, H)


# ---------------------------------------------------------------------------
# Settings


def test_settings_reject_unknown_key():
    with pytest.raises(InvalidInputError, match="unknown solver setting.*'ridge_scal'"):
        SolverSettings.from_mapping({"ridge_scal": 2.0})


def test_settings_error_lists_valid_keys():
    with pytest.raises(InvalidInputError, match="valid settings are: ridge_scale"):
        SolverSettings.from_mapping({"alpha": 1.0})


def test_settings_accept_json_overrides():
    settings = SolverSettings.from_mapping(
        {"ridge_scale": 0.5, "rank_candidates": [1, 2, 3], "confidence_radius": 0.2}
    )
    assert settings.ridge_scale == 0.5
    assert settings.rank_candidates == (1, 2, 3)
    assert settings.confidence_radius == 0.2
    assert json.loads(json.dumps(settings.to_dict()))["rank_candidates"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ridge_scale": 0.0}, "'ridge_scale' must be a finite number > 0"),
        ({"ridge_scale": float("nan")}, "'ridge_scale'"),
        ({"confidence_level": 1.0}, "'confidence_level' must lie in"),
        ({"rank_folds": 1}, "'rank_folds' must be at least 2"),
        ({"max_rank": 2.5}, "'max_rank' must be an integer"),
        ({"rank_candidates": []}, "'rank_candidates' must be a non-empty"),
        ({"lasso_penalty": -1.0}, "'lasso_penalty'"),
        ({"ridge": 0.0}, "'ridge' must be a finite number > 0"),
        ({"ridge": "big"}, "'ridge' must be a number"),
    ],
)
def test_settings_reject_invalid_values(overrides, message):
    with pytest.raises(InvalidInputError, match=message):
        SolverSettings.from_mapping(overrides)


def test_ridge_rules_shrink_with_labels():
    settings = SolverSettings()
    assert joint_ridge(settings, [100] * 10) == pytest.approx(10 / 1000)
    assert joint_ridge(settings, [1000] * 10) == pytest.approx(10 / 10_000)
    assert single_task_ridge(settings, 50) == pytest.approx(1 / 50)
    fixed = SolverSettings(ridge=0.03)
    assert joint_ridge(fixed, [1000] * 10) == 0.03
    assert single_task_ridge(fixed, 50) == 0.03


def test_plan_quotas_follow_active_sample():
    quotas = plan_quotas(1000, [0.0, 2.0, 0.0, -2.0])
    # Each relevant task: 1000 * (1/4 + 1/8); the others 1000 / 8.
    np.testing.assert_array_equal(quotas, [125, 375, 125, 375])
    np.testing.assert_array_equal(
        remaining_quotas(quotas, [200, 100, 0, 400]), [0, 275, 125, 0]
    )


# ---------------------------------------------------------------------------
# Algorithm 1


@pytest.fixture(scope="module")
def small_instance():
    return make_planted_instance(15, 2, 6, n_relevant=2, logit_std=1.5, seed=11)


def _known_relevance_error(instance, total, seed):
    counts = plan_quotas(total, instance.relevance)
    sources = instance.sample_sources(counts, rng=seed)
    result = run_known_relevance(sources, instance.relevance, rank=instance.rank)
    return _target_error(instance, result.theta), result


def test_known_relevance_error_shrinks_with_budget(small_instance):
    small = np.mean(
        [_known_relevance_error(small_instance, 1500, s)[0] for s in range(3)]
    )
    large = np.mean(
        [_known_relevance_error(small_instance, 15_000, s)[0] for s in range(3)]
    )
    # Error ~ 1/sqrt(N): ten times the labels should give about 0.32 times the error.
    assert large < 0.55 * small


def test_known_relevance_result_is_consistent(small_instance):
    _, result = _known_relevance_error(small_instance, 3000, 0)
    d, M = 15, 6
    assert result.theta.shape == (d,)
    assert result.basis.shape == (d, 2)
    np.testing.assert_allclose(result.basis.T @ result.basis, np.eye(2), atol=1e-8)
    np.testing.assert_allclose(
        result.theta, result.source_thetas @ small_instance.relevance
    )
    assert result.curvature.shape == (d, d)
    assert np.all(np.linalg.eigvalsh(result.curvature) > 0)
    assert result.confidence_radius > 0
    assert result.task_names == small_instance.source_names
    assert result.diagnostics["ridge"]["joint"] == pytest.approx(M / 3000)
    json.dumps(result.diagnostics, allow_nan=False)


def test_known_relevance_radius_rule_uses_effective_labels(small_instance):
    _, result = _known_relevance_error(small_instance, 3000, 0)
    counts = plan_quotas(3000, small_instance.relevance)
    effective = 1.0 / np.sum(small_instance.relevance**2 / counts)
    record = result.diagnostics["confidence_radius"]
    assert record["effective_labels"] == pytest.approx(effective)
    assert result.confidence_radius == pytest.approx(
        np.sqrt(chi2.ppf(0.95, 2) / effective)
    )


def test_known_relevance_radius_override(small_instance):
    sources = small_instance.sample_sources([200] * 6, rng=0)
    result = run_known_relevance(
        sources, small_instance.relevance, 2, {"confidence_radius": 0.125}
    )
    assert result.confidence_radius == 0.125
    assert result.diagnostics["confidence_radius"]["rule"] == "override"


def test_default_ridge_bias_below_two_percent(small_instance):
    sources = small_instance.sample_sources([3000] * 6, rng=5)
    nu = small_instance.relevance
    unpenalised = run_known_relevance(sources, nu, 2, SolverSettings(ridge=1e-9))
    default = run_known_relevance(sources, nu, 2)
    fixed = run_known_relevance(sources, nu, 2, SolverSettings(ridge=0.01))
    norm = np.linalg.norm(unpenalised.theta)
    default_bias = np.linalg.norm(default.theta - unpenalised.theta) / norm
    fixed_bias = np.linalg.norm(fixed.theta - unpenalised.theta) / norm
    assert default_bias < 0.02
    # A fixed ridge of 0.01 keeps a bias of several percent at this label count.
    assert fixed_bias > 0.02


def test_rank_is_selected_when_not_given(small_instance):
    sources = small_instance.sample_sources([1500] * 6, rng=2)
    result = run_known_relevance(
        sources, small_instance.relevance, None, {"rank_candidates": [1, 2, 3, 4]}
    )
    record = result.diagnostics["rank"]
    assert result.rank == 2
    assert record["source"] == "selected"
    assert record["candidates"] == [1, 2, 3, 4]
    assert len(record["heldout_log_likelihood"]) == 4
    json.dumps(result.diagnostics, allow_nan=False)


# ---------------------------------------------------------------------------
# Degenerate inputs


def test_source_without_labels_is_named(small_instance):
    sources = small_instance.sample_sources([50, 50, 50, 0, 50, 50], rng=0)
    with pytest.raises(InsufficientDataError, match="task 'source_3' has no labels"):
        run_known_relevance(sources, small_instance.relevance, 2)


def test_pilot_target_without_labels_is_named(small_instance):
    sources = small_instance.sample_sources([50] * 6, rng=0)
    target = small_instance.sample("target", 0, rng=0)
    with pytest.raises(InsufficientDataError, match="task 'target' has no labels"):
        run_pilot(sources, target, None, 2)


def test_main_without_target_or_relevance_is_rejected(small_instance):
    sources = small_instance.sample_sources([50] * 6, rng=0)
    with pytest.raises(InsufficientDataError, match="task 'target' has no labels"):
        run_main(sources, None, 2)


def test_relevance_of_wrong_length_is_rejected(small_instance):
    sources = small_instance.sample_sources([50] * 6, rng=0)
    with pytest.raises(InvalidInputError, match="one entry per source task"):
        run_known_relevance(sources, [1.0, 0.0], 2)


def test_non_finite_relevance_names_task(small_instance):
    sources = small_instance.sample_sources([50] * 6, rng=0)
    relevance = np.zeros(6)
    relevance[4] = np.nan
    with pytest.raises(InvalidInputError, match="'source_4'"):
        run_known_relevance(sources, relevance, 2)


def test_rank_above_task_count_is_rejected(small_instance):
    sources = small_instance.sample_sources([50] * 6, rng=0)
    with pytest.raises(InvalidInputError, match="rank must lie between 1 and min"):
        run_known_relevance(sources, small_instance.relevance, 7)


def test_dimension_mismatch_names_task(small_instance):
    sources = small_instance.sample_sources([50] * 6, rng=0)
    sources[2] = TaskData("source_2", np.zeros((5, 14)), np.zeros(5))
    with pytest.raises(InvalidInputError, match="task 'source_2'"):
        run_known_relevance(sources, small_instance.relevance, 2)


def test_labels_outside_unit_interval_name_task(small_instance):
    sources = small_instance.sample_sources([50] * 6, rng=0)
    bad = sources[1]
    sources[1] = TaskData(bad.name, bad.X, bad.y * 2.0)
    with pytest.raises(InvalidInputError, match="task 'source_1'"):
        run_known_relevance(sources, small_instance.relevance, 2)


def test_all_zero_prior_is_rejected(small_instance):
    sources = small_instance.sample_sources([50] * 6, rng=0)
    target = small_instance.sample("target", 30, rng=1)
    with pytest.raises(InvalidInputError, match="prior must have at least one"):
        run_pilot(sources, target, np.zeros(6), 2)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("planned_target_labels", math.nan),
        ("planned_target_labels", -5),
        ("planned_target_labels", 0),
        ("planned_target_labels", True),
        ("planned_target_labels", 5.5),
        ("planned_source_labels", -1000),
    ],
)
def test_pilot_rejects_invalid_planned_labels(small_instance, argument, value):
    sources = small_instance.sample_sources([50] * 6, rng=0)
    target = small_instance.sample("target", 30, rng=1)
    with pytest.raises(InvalidInputError, match=argument):
        run_pilot(sources, target, None, 2, **{argument: value})


@pytest.mark.parametrize(
    ("quotas", "collected", "argument"),
    [
        ([5, 5], [math.nan, 1], "collected"),
        ([5, math.inf], [1, 1], "quotas"),
        ([5.5, 5], [1, 1], "quotas"),
    ],
)
def test_remaining_quotas_rejects_invalid_counts(quotas, collected, argument):
    with pytest.raises(InvalidInputError, match=argument):
        remaining_quotas(quotas, collected)


def test_zero_relevance_gives_zero_target():
    instance = make_planted_instance(6, 1, 3, relevance=[0.0, 0.0, 0.0], seed=0)
    sources = instance.sample_sources([100] * 3, rng=0)
    result = run_known_relevance(sources, np.zeros(3), 1)
    np.testing.assert_array_equal(result.theta, np.zeros(6))
    assert result.confidence_radius == 0.0


# ---------------------------------------------------------------------------
# Algorithm 2


@pytest.fixture(scope="module")
def clear_instance():
    # Relevance on two tasks whose smallest-l1 representation wins clearly.
    instance = make_planted_instance(
        12, 3, 6, relevance=[0.0, 0.8, 0.0, 0.0, 0.6, 0.0], seed=30
    )
    representation = min_l1_representation(
        instance.source_thetas, instance.target_theta
    )
    assert representation.support == [1, 4]
    assert representation.margin is None or representation.margin > 0.2
    return instance, representation


def test_pilot_finds_relevant_tasks(clear_instance):
    instance, best = clear_instance
    counts = plan_quotas(6 * 1500, np.full(6, 1 / 6))
    sources = instance.sample_sources(counts, rng=3)
    target = instance.sample("target", 2000, rng=4)
    pilot = run_pilot(sources, target, None, 3)

    nu_hat = pilot.relevance
    # Judged by how well it reproduces the true target ...
    misfit = instance.source_thetas @ nu_hat - instance.target_theta
    assert np.linalg.norm(misfit) < 0.25 * np.linalg.norm(instance.target_theta)
    # ... by its l1 norm against the smallest one ...
    assert np.abs(nu_hat).sum() < 1.2 * best.l1_norm
    # ... and, since the smallest representation wins by a clear margin, by support.
    off_support = np.delete(np.abs(nu_hat), best.support)
    assert off_support.sum() < 0.15 * np.abs(nu_hat).sum()
    assert set(np.argsort(-np.abs(nu_hat))[:2]) == set(best.support)

    lasso = pilot.diagnostics["lasso"]
    assert lasso["converged"]
    assert lasso["penalty"] == pilot.lasso_penalty > 0
    assert pilot.diagnostics["ridge"]["curvature"] == min(
        pilot.diagnostics["ridge"]["pilot_joint"],
        pilot.diagnostics["ridge"]["pilot_target"],
    )
    json.dumps(pilot.diagnostics, allow_nan=False)


def test_pilot_prior_zero_excludes_task(clear_instance):
    instance, _ = clear_instance
    sources = instance.sample_sources([300] * 6, rng=3)
    target = instance.sample("target", 300, rng=4)
    prior = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    pilot = run_pilot(sources, target, prior, 3)
    assert pilot.relevance[3] == 0.0
    np.testing.assert_allclose(pilot.prior, prior / 5)


def test_subspace_target_fit_beats_full_dimension():
    instance = make_planted_instance(30, 2, 8, n_relevant=2, seed=5)
    H = instance.fisher_information("target")
    subspace_errors, full_errors = [], []
    for seed in range(3):
        sources = instance.sample_sources([2000] * 8, rng=seed)
        target = instance.sample("target", 80, rng=100 + seed)
        result = run_main(sources, target, 2)
        full = fit_ridge_logistic(target.X, target.y, 1.0 / target.n, task="target")
        subspace_errors.append(estimation_error(result.theta, instance.target_theta, H))
        full_errors.append(estimation_error(full.theta, instance.target_theta, H))
        assert result.diagnostics["target_estimate"] == "subspace_fit"
    # About sqrt(k / d) = 0.26 in theory; allow a wide band.
    assert np.mean(subspace_errors) < 0.6 * np.mean(full_errors)


def test_main_without_target_labels_combines_sources(clear_instance):
    instance, _ = clear_instance
    sources = instance.sample_sources([500] * 6, rng=0)
    empty = instance.sample("target", 0, rng=0)
    result = run_main(sources, empty, 3, relevance=instance.relevance)
    np.testing.assert_allclose(result.theta, result.source_thetas @ instance.relevance)
    assert result.diagnostics["target_estimate"] == "relevance_combination"


def test_two_phases_end_to_end(clear_instance):
    instance, best = clear_instance
    pilot_sources = instance.sample_sources(plan_quotas(3000, np.full(6, 1 / 6)), rng=7)
    pilot_target = instance.sample("target", 600, rng=8)
    pilot = run_pilot(sources := pilot_sources, pilot_target, None, 3)

    quotas = plan_quotas(12_000, pilot.relevance)
    assert quotas[best.support].min() > quotas.max() / 2
    main_sources = instance.sample_sources(quotas, rng=9)
    # Reuse the pilot labels in phase 2, as the caller may.
    combined = [
        TaskData(a.name, np.vstack([a.X, b.X]), np.concatenate([a.y, b.y]))
        for a, b in zip(sources, main_sources, strict=True)
    ]
    main_target = instance.sample("target", 200, rng=10)
    result = run_main(combined, main_target, 3, relevance=pilot.relevance)

    error = _target_error(instance, result.theta)
    norm = _target_error(instance, np.zeros(12))
    assert error < 0.2 * norm
    assert result.diagnostics["relevance"] == "given"
    assert result.diagnostics["ridge"]["curvature"] == min(
        result.diagnostics["ridge"]["joint"], result.diagnostics["ridge"]["target"]
    )
    json.dumps(result.diagnostics, allow_nan=False)


def test_main_radius_adds_target_and_source_variance(clear_instance):
    instance, _ = clear_instance
    counts = np.array([400, 500, 300, 300, 600, 300])
    sources = instance.sample_sources(counts, rng=0)
    target = instance.sample("target", 150, rng=1)
    result = run_main(sources, target, 3, relevance=instance.relevance)
    variance = 1 / 150 + np.sum(instance.relevance**2 / counts)
    record = result.diagnostics["confidence_radius"]
    assert record["effective_labels"] == pytest.approx(1 / variance)
    assert result.confidence_radius == pytest.approx(
        np.sqrt(chi2.ppf(0.95, 3) * variance)
    )


def test_pilot_curvature_uses_planned_ridges(clear_instance):
    instance, _ = clear_instance
    sources = instance.sample_sources([200] * 6, rng=3)
    target = instance.sample("target", 100, rng=4)
    pilot = run_pilot(
        sources,
        target,
        None,
        3,
        planned_source_labels=60_000,
        planned_target_labels=1_000,
    )
    ridges = pilot.diagnostics["ridge"]
    assert ridges["main_joint"] == pytest.approx(6 / 60_000)
    assert ridges["main_target"] == pytest.approx(1 / 1_000)
    assert ridges["curvature"] == pytest.approx(6 / 60_000)
