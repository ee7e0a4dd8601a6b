"""Sample efficiency of the active allocation (eq. 3.1) and of the subspace target fit.

Part 1 (Algorithm 1, known relevance). On planted instances with M = 20,
d = 50, k = 3, relevance on 3 tasks and logit standard deviation 1.5, it
measures the mean squared target error ``||theta_hat - theta*||_H^2`` (H the
target's exact Fisher information) of active allocation at a budget N_a and
of uniform allocation at a grid of budgets. A power law ``c N^-p`` fitted to
the uniform curve gives the budget N_u at which uniform allocation matches
active allocation; ``N_u / N_a`` is the measured saving. It is printed beside

- the theory's ratio ``M ||nu||_2^2 / ||nu||_1^2`` (Remark 3.2), and
- the largest saving eq. 3.1 can give: the ratio of the variance factors
  ``sum_m nu_m^2 / n_m`` under uniform and under active quotas. The uniform
  half of eq. 3.1 caps how many labels a relevant task can receive.

The error is split into the part outside the true subspace (from estimating
the subspace) and the part inside it. H maps the true subspace to itself on
these instances, so the two parts add up exactly.

Part 2 (Algorithm 2, phase 2). With the subspace learned from active source
data, it measures how many target labels a full-d ridge fit needs to reach
the error that the fit inside the learned subspace (eq. 3.14) reaches with
few labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from solvers.algorithms import (
    SolverSettings,
    plan_quotas,
    run_known_relevance,
    single_task_ridge,
)
from solvers.logistic import fit_ridge_logistic
from solvers.simulate import PlantedInstance, make_planted_instance

DIMENSION = 50
RANK = 3
N_SOURCES = 20
N_RELEVANT = 3
LOGIT_STD = 1.5


@dataclass
class _Errors:
    total: float
    outside: float
    inside: float


def _squared_errors(instance: PlantedInstance, theta_hat: np.ndarray) -> _Errors:
    H = instance.fisher_information("target")
    error = theta_hat - instance.target_theta
    inside = instance.basis @ (instance.basis.T @ error)
    outside = error - inside
    return _Errors(
        total=float(error @ H @ error),
        outside=float(outside @ H @ outside),
        inside=float(inside @ H @ inside),
    )


def _mean_errors(
    instance: PlantedInstance, total: int, relevance_for_quotas, repeats: int, seed: int
) -> _Errors:
    """Mean squared errors of Algorithm 1 over ``repeats`` samples."""
    settings = SolverSettings()
    collected = []
    for repeat in range(repeats):
        quotas = plan_quotas(total, relevance_for_quotas)
        rng = np.random.default_rng([seed, total, repeat])
        sources = instance.sample_sources(quotas, rng)
        result = run_known_relevance(sources, instance.relevance, RANK, settings)
        collected.append(_squared_errors(instance, result.theta))
    return _Errors(
        total=float(np.mean([e.total for e in collected])),
        outside=float(np.mean([e.outside for e in collected])),
        inside=float(np.mean([e.inside for e in collected])),
    )


def _matching_budget(budgets: np.ndarray, errors: np.ndarray, level: float) -> float:
    """Solve ``c N^-p = level`` for the power law fitted to (budgets, errors)."""
    slope, intercept = np.polyfit(np.log(budgets), np.log(errors), 1)
    return float(math.exp((math.log(level) - intercept) / slope))


def _theory_ratios(relevance: np.ndarray, total: int) -> tuple[float, float]:
    m = relevance.size
    theory = m * float(np.sum(relevance**2)) / float(np.abs(relevance).sum()) ** 2
    quotas = plan_quotas(total, relevance)
    active_variance = float(np.sum(relevance**2 / quotas))
    uniform_variance = m * float(np.sum(relevance**2)) / total
    return theory, uniform_variance / active_variance


def _allocation_part(quick: bool, out: TextIO) -> None:
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    repeats = 3 if quick else 10
    active_budget = 6000
    factors = np.array(
        [1.0, 1.25, 1.6, 2.0] if quick else [1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0]
    )
    budgets = (active_budget * factors).astype(int)

    out.write(
        f"Algorithm 1 on planted instances: M={N_SOURCES}, d={DIMENSION}, k={RANK}, "
        f"relevance on {N_RELEVANT} tasks, logit std {LOGIT_STD}.\n"
        f"Active budget N_a={active_budget} ({active_budget // N_SOURCES} labels/task "
        f"on average); uniform budgets {budgets.tolist()}; "
        f"{repeats} samples per point.\n"
        "Errors are mean ||theta_hat - theta*||_H^2; 'outside' is the part outside\n"
        "the true subspace (subspace estimation), 'inside' the part within it.\n\n"
    )
    header = (
        f"{'seed':>4} {'theory':>7} {'eq3.1cap':>8} {'measured':>8} "
        f"{'act.total':>9} {'act.out':>8} {'act.in':>8} {'uni.total':>9} "
        f"{'uni.out':>8} {'uni.in':>8} {'in-ratio':>8}\n"
    )
    out.write(header)
    measured, theory_list, cap_list, outside_shares = [], [], [], []
    inside_ratios, outside_ratios = [], []
    for seed in seeds:
        instance = make_planted_instance(
            DIMENSION,
            RANK,
            N_SOURCES,
            n_relevant=N_RELEVANT,
            logit_std=LOGIT_STD,
            seed=seed,
        )
        theory, cap = _theory_ratios(instance.relevance, active_budget)
        active = _mean_errors(
            instance, active_budget, instance.relevance, repeats, seed
        )
        uniform = [
            _mean_errors(instance, int(b), np.zeros(N_SOURCES), repeats, seed)
            for b in budgets
        ]
        uniform_totals = np.array([u.total for u in uniform])
        ratio = _matching_budget(budgets, uniform_totals, active.total) / active_budget
        inside_ratio = uniform[0].inside / active.inside
        outside_ratios.append(uniform[0].outside / active.outside)
        measured.append(ratio)
        theory_list.append(theory)
        cap_list.append(cap)
        inside_ratios.append(inside_ratio)
        outside_shares.append(active.outside / active.total)
        out.write(
            f"{seed:>4} {theory:>7.2f} {cap:>8.2f} {ratio:>8.2f} "
            f"{active.total:>9.4f} {active.outside:>8.4f} {active.inside:>8.4f} "
            f"{uniform[0].total:>9.4f} {uniform[0].outside:>8.4f} "
            f"{uniform[0].inside:>8.4f} {inside_ratio:>8.2f}"
            f"{'  (extrapolated)' if ratio > factors[-1] else ''}\n"
        )
    out.write(
        f"mean {np.mean(theory_list):>7.2f} {np.mean(cap_list):>8.2f} "
        f"{np.mean(measured):>8.2f}   (median {np.median(measured):.2f}, range "
        f"{min(measured):.2f}-{max(measured):.2f})\n"
        f"Share of the active error outside the true subspace: "
        f"{np.mean(outside_shares):.0%} on average.\n"
        f"At equal budget N_a, uniform/active error ratio: inside the subspace "
        f"{np.mean(inside_ratios):.2f} (eq. 3.1 cap {np.mean(cap_list):.2f}), "
        f"outside {np.mean(outside_ratios):.2f}.\n\n"
    )


def _target_part(quick: bool, out: TextIO) -> None:
    seeds = [0] if quick else [0, 1, 2]
    repeats = 3 if quick else 6
    source_budget = 20_000
    target_sizes = np.array([25, 50, 100, 200, 400, 800, 1600, 3200])
    reference_size = 100
    settings = SolverSettings()

    out.write(
        f"Target labels: fit inside the learned subspace (k={RANK}) vs a full-d fit "
        f"(d={DIMENSION}).\nSources: active allocation of {source_budget} labels; "
        f"{repeats} samples x {len(seeds)} instances; "
        "mean ||theta_hat - theta*||_H^2.\n"
        f"{'n_target':>8} {'subspace':>9} {'full-d':>9}\n"
    )
    subspace = np.zeros(target_sizes.size)
    full = np.zeros(target_sizes.size)
    for seed in seeds:
        instance = make_planted_instance(
            DIMENSION,
            RANK,
            N_SOURCES,
            n_relevant=N_RELEVANT,
            logit_std=LOGIT_STD,
            seed=seed,
        )
        H = instance.fisher_information("target")
        for repeat in range(repeats):
            rng = np.random.default_rng([seed, 99, repeat])
            quotas = plan_quotas(source_budget, instance.relevance)
            sources = instance.sample_sources(quotas, rng)
            # Same computation as run_main, with one source fit for all target sizes.
            basis = run_known_relevance(
                sources, instance.relevance, RANK, settings
            ).basis
            for i, n in enumerate(target_sizes):
                target = instance.sample("target", int(n), rng)
                ridge = single_task_ridge(settings, target.n)
                inside = fit_ridge_logistic(
                    target.X, target.y, ridge, basis=basis
                ).theta
                plain = fit_ridge_logistic(target.X, target.y, ridge).theta
                for store, theta in ((subspace, inside), (full, plain)):
                    error = theta - instance.target_theta
                    store[i] += float(error @ H @ error)
    subspace /= len(seeds) * repeats
    full /= len(seeds) * repeats
    for n, a, b in zip(target_sizes, subspace, full, strict=True):
        out.write(f"{n:>8} {a:>9.4f} {b:>9.4f}\n")

    level = float(subspace[target_sizes == reference_size][0])
    # Fit the full-d power law on sizes where the ridge no longer dominates.
    usable = target_sizes >= 200
    needed = _matching_budget(target_sizes[usable], full[usable], level)
    out.write(
        f"Error {level:.4f} takes {reference_size} target labels inside the subspace "
        "and "
        f"about {needed:.0f} with a full-d fit: {needed / reference_size:.1f}x "
        f"(theory d/k = {DIMENSION / RANK:.1f}).\n"
        f"Floor of the subspace fit at n={target_sizes[-1]}: {subspace[-1]:.4f} "
        "(the part of theta* the learned subspace misses).\n"
    )


def run(*, quick: bool = False, out: TextIO) -> None:
    """Run both parts and write the tables to ``out``."""
    _allocation_part(quick, out)
    _target_part(quick, out)
