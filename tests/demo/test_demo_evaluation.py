"""Metrics, quota parsing and report rendering of the MovieLens demo."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sklearn_log_loss

from app.demo.campaign import batch_plan
from app.demo.data import Comparisons, UserRatings
from app.demo.evaluation import (
    HeldOut,
    log_loss,
    mean_regret,
    pairwise_accuracy,
    random_choice_regret,
)
from app.demo.report import (
    METHODS,
    MethodScore,
    RunRecord,
    relevance_concentration,
    summarise,
    verdict,
)


def make_comparisons(seed: int = 0, n: int = 300, d: int = 4) -> Comparisons:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (rng.random(n) < 0.5).astype(float)
    return Comparisons(np.zeros(n, int), np.zeros(n, int), X, y)


def test_accuracy_matches_sign_rule():
    comparisons = make_comparisons()
    theta = np.array([1.0, -0.5, 0.0, 2.0])
    predicted = (comparisons.X @ theta > 0).astype(float)
    assert pairwise_accuracy(theta, comparisons) == pytest.approx(
        np.mean(predicted == comparisons.y)
    )


def test_accuracy_of_zero_theta_is_one_half():
    assert pairwise_accuracy(np.zeros(4), make_comparisons()) == 0.5


def test_log_loss_matches_sklearn():
    comparisons = make_comparisons()
    theta = np.array([3.0, -0.5, 0.1, 2.0])
    probabilities = 1.0 / (1.0 + np.exp(-(comparisons.X @ theta)))
    expected = sklearn_log_loss(comparisons.y, probabilities, labels=[0.0, 1.0])
    assert log_loss(theta, comparisons) == pytest.approx(expected, rel=1e-6)


def test_log_loss_is_finite_for_huge_scores():
    comparisons = make_comparisons()
    value = log_loss(np.full(4, 1e6), comparisons)
    assert math.isfinite(value)
    assert value > 0


def make_heldout() -> HeldOut:
    ratings = UserRatings(
        user=1, rows=np.arange(5), ratings=np.array([1, 5, 3, 4, 2.0])
    )
    sets = [np.array([0, 1, 2]), np.array([2, 3, 4])]
    return HeldOut(make_comparisons(), ratings, sets, [np.eye(3), np.eye(3)])


def test_regret_of_known_choices():
    heldout = make_heldout()
    # Set 1 ratings (1, 5, 3): choosing index 2 loses 2 stars; set 2 ratings
    # (3, 4, 2): choosing index 1 loses nothing.
    assert mean_regret([2, 1], heldout) == pytest.approx(1.0)
    assert mean_regret([1, 1], heldout) == 0.0


def test_random_choice_regret():
    heldout = make_heldout()
    assert random_choice_regret(heldout) == pytest.approx(((5 - 3) + (4 - 3)) / 2)


def test_regret_needs_one_choice_per_context():
    with pytest.raises(ValueError, match="one choice per context"):
        mean_regret([0], make_heldout())


@pytest.mark.parametrize(
    ("quotas", "expected"),
    [
        ({"next_batch": {"a": 3, "b": 0}}, {"a": 3}),
        ({"next_batch": None, "tasks": [{"task": "a", "remaining": 7}]}, {"a": 7}),
        ({"tasks": [{"task": "a", "remaining": 0}]}, {}),
    ],
)
def test_batch_plan_reads_quotas(quotas, expected):
    assert batch_plan(quotas) == expected


def test_relevance_concentration_bounds():
    assert relevance_concentration([1, 1, 1, 1]) == pytest.approx(1.0)
    assert relevance_concentration([0, 0, 2, 0]) == pytest.approx(4.0)
    assert relevance_concentration([0, 0, 0]) == 1.0


def make_run(seed: int, active_accuracy: float) -> RunRecord:
    scores = {
        method: MethodScore(0.6, 0.68, 0.5, 100, 10, [(50, 0.55), (110, 0.6)])
        for method in METHODS
    }
    scores["active"] = MethodScore(active_accuracy, 0.66, 0.4, 100, 10, [(110, 0.6)])
    return RunRecord(1, seed, "id", scores, {"a": 0.5, "b": 0.0}, {"a": 3}, 1.0, 2, 1.0)


def test_summary_is_json_and_paired():
    runs = [make_run(0, 0.62), make_run(1, 0.64)]
    summary = summarise(runs)
    json.dumps(summary, allow_nan=False)
    assert set(summary["methods"]) == set(METHODS)
    assert summary["methods"]["active"]["target_pairwise_accuracy"] == pytest.approx(
        0.63
    )
    paired = summary["active_minus_uniform"]["target_pairwise_accuracy"]
    assert paired["mean"] == pytest.approx(0.03)
    assert paired["active_better_runs"] == 2
    assert paired["equal_runs"] == 0
    assert summary["relevance_concentration"]["mean"] == pytest.approx(2.0)


def test_verdict_needs_a_clear_difference():
    clear = summarise([make_run(0, 0.62), make_run(1, 0.63)])
    unclear = summarise([make_run(0, 0.55), make_run(1, 0.66)])
    single = summarise([make_run(0, 0.7)])
    assert verdict(clear).startswith("Active budgeting beat uniform")
    assert verdict(unclear).startswith("Active budgeting did not clearly beat")
    assert verdict(single).startswith("One run cannot separate")
