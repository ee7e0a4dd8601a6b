"""Baseline fits and the pessimistic choice used to score them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from app.demo.baselines import (
    FittedModel,
    fit_single_task,
    fit_transfer,
    pessimistic_choices,
)
from solvers.algorithms import SolverSettings
from solvers.data import TaskData


def planted_task(
    name: str, theta: np.ndarray, n: int, rng: np.random.Generator
) -> TaskData:
    X = rng.standard_normal((n, theta.size))
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ theta)))).astype(float)
    return TaskData(name, X, y)


def test_single_task_fit_recovers_planted_direction():
    rng = np.random.default_rng(0)
    theta = np.array([2.0, -1.0, 0.5, 0.0, 1.0])
    model = fit_single_task(planted_task("t", theta, 4000, rng), SolverSettings())
    cosine = model.theta @ theta / np.linalg.norm(model.theta) / np.linalg.norm(theta)
    assert cosine > 0.98
    assert model.target_labels == 4000
    assert model.source_labels == 0


def test_single_task_radius_uses_full_dimension():
    rng = np.random.default_rng(1)
    task = planted_task("t", np.ones(6), 300, rng)
    model = fit_single_task(task, SolverSettings())
    expected = np.sqrt(chi2.ppf(0.95, df=6) / 300)
    assert model.radius == pytest.approx(expected)
    np.testing.assert_allclose(model.curvature, model.curvature.T)
    assert np.linalg.eigvalsh(model.curvature).min() > 0


def test_pooled_counts_split_source_and_target():
    rng = np.random.default_rng(2)
    task = planted_task("pooled", np.ones(3), 120, rng)
    model = fit_single_task(task, SolverSettings(), source_labels=100)
    assert model.source_labels == 100
    assert model.target_labels == 20


def test_transfer_fit_counts_labels_and_stays_in_subspace():
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.standard_normal((8, 2)))[0]
    sources = [
        planted_task(f"s{m}", basis @ rng.standard_normal(2) * 2, 300, rng)
        for m in range(6)
    ]
    target = planted_task("t", basis @ np.array([1.5, -1.0]), 60, rng)
    model = fit_transfer(sources, target, 2, SolverSettings())
    assert model.source_labels == 1800
    assert model.target_labels == 60
    assert np.all(np.isfinite(model.theta))
    assert model.radius > 0


def test_pessimistic_choice_with_zero_radius_is_greedy():
    rng = np.random.default_rng(4)
    theta = rng.standard_normal(4)
    contexts = [rng.standard_normal((5, 4)) for _ in range(20)]
    model = FittedModel(theta, np.eye(4), 0.0, 0, 10)
    chosen = pessimistic_choices(model, contexts)
    expected = [int(np.argmax(actions @ theta)) for actions in contexts]
    assert chosen.tolist() == expected
