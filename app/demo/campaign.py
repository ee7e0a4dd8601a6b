"""One active labelling campaign, played against the service over HTTP.

The demo acts as the labelling platform of one Algorithm 2 study. It reads the
quotas, draws that many comparisons from each user's real ratings and posts
them. When a phase's quotas are met, the service queues a fit by itself, and
the demo waits for it. This repeats until the study is complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from app.demo.client import ServiceClient, ServiceError
from app.demo.data import ComparisonStream, FeatureMap

logger = logging.getLogger(__name__)

PHASES = ("pilot", "main")


@dataclass(frozen=True)
class Budget:
    """Label budget of a study, in comparisons.

    Attributes
    ----------
    pilot_source, pilot_target : int
        Labels of the pilot phase, summed over the source users and for the target.
    source, target : int
        Labels of the main phase, summed over the source users and for the target.
    """

    pilot_source: int
    pilot_target: int
    source: int
    target: int

    @property
    def total(self) -> int:
        """All labels of both phases."""
        return self.pilot_source + self.pilot_target + self.source + self.target

    @property
    def total_source(self) -> int:
        """Source labels of both phases."""
        return self.pilot_source + self.source

    @property
    def total_target(self) -> int:
        """Target labels of both phases."""
        return self.pilot_target + self.target

    def as_json(self) -> dict[str, int]:
        """Return the ``budget`` object of ``POST /v1/studies``."""
        return {
            "source": self.source,
            "target": self.target,
            "pilot_source": self.pilot_source,
            "pilot_target": self.pilot_target,
        }


def task_name(user: int) -> str:
    """Return the study task name of a MovieLens user."""
    return f"user-{user}"


@dataclass
class CollectedLabels:
    """Comparisons posted to the service, per phase and task, in posting order."""

    features: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)
    labels: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)

    def add(self, phase: str, task: str, X: np.ndarray, y: np.ndarray) -> None:
        """Record comparisons of ``task`` posted during ``phase``."""
        self.features.setdefault((phase, task), []).append(X)
        self.labels.setdefault((phase, task), []).append(y)

    def task(
        self, task: str, dimension: int, phases: tuple[str, ...] = PHASES
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the features and labels of ``task`` collected in ``phases``."""
        features = [X for phase in phases for X in self.features.get((phase, task), [])]
        labels = [y for phase in phases for y in self.labels.get((phase, task), [])]
        if not features:
            return np.empty((0, dimension)), np.empty(0)
        return np.vstack(features), np.concatenate(labels)

    def count(self, task: str, phases: tuple[str, ...] = PHASES) -> int:
        """Number of comparisons of ``task`` collected in ``phases``."""
        return sum(
            y.size for phase in phases for y in self.labels.get((phase, task), [])
        )


@dataclass
class CampaignResult:
    """Outcome of one campaign: posted labels, models and fits.

    Attributes
    ----------
    study_id : str
        Id of the study in the service.
    collected : CollectedLabels
        Every comparison the demo posted.
    models : dict
        ``GET /model`` response after each phase's fit, keyed by ``"pilot"`` and
        ``"main"``.
    fits : list of dict
        ``GET /fits/{id}`` response of each phase's fit.
    rounds : int
        Number of quota rounds that posted labels.
    seconds : float
        Wall-clock time of the campaign.
    """

    study_id: str
    collected: CollectedLabels
    models: dict[str, dict[str, Any]]
    fits: list[dict[str, Any]]
    rounds: int
    seconds: float


def batch_plan(quotas: Mapping[str, Any]) -> dict[str, int]:
    """Read how many labels each task gets in the next round from a quotas response.

    Uses the ``next_batch`` object (``{task: count}``), which the service
    returns when the request had ``?batch=``. Without it, every task's
    ``remaining`` count is used. Tasks with no labels to collect are left out.
    """
    next_batch = quotas.get("next_batch")
    if isinstance(next_batch, Mapping):
        plan = {str(task): int(count) for task, count in next_batch.items()}
    else:
        plan = {
            str(entry["task"]): int(entry.get("remaining", 0))
            for entry in quotas.get("tasks", [])
        }
    return {task: count for task, count in plan.items() if count > 0}


def run_campaign(
    client: ServiceClient,
    *,
    name: str,
    feature_map: FeatureMap,
    target: ComparisonStream,
    sources: list[ComparisonStream],
    budget: Budget,
    rank: int | None,
    batch_size: int,
    settings: Mapping[str, Any] | None = None,
    fit_timeout: float = 600.0,
    poll_interval: float = 0.1,
    progress: bool = True,
) -> CampaignResult:
    """Run one Algorithm 2 study through the API until its phase is ``complete``.

    Parameters
    ----------
    client : ServiceClient
        Connection to the service.
    name : str
        Study name.
    feature_map : FeatureMap
        The fixed movie features.
    target : ComparisonStream
        Comparisons of the target user, drawn from the training movies only.
        The campaign posts them in sequence order.
    sources : list of ComparisonStream
        Comparisons of each source user, posted in sequence order.
    budget : Budget
        Label budget of the study.
    rank : int or None
        Rank k of the shared representation; None lets the service choose it.
    batch_size : int
        Labels requested per round (``?batch=`` of the quotas call).
    settings : mapping, optional
        Solver overrides sent as the study's ``settings``.
    fit_timeout : float, default=600.0
        Seconds to wait for one fit before giving up.
    poll_interval : float, default=0.1
        Seconds between polls of a running fit.
    progress : bool, default=True
        Show a progress bar of rounds and labels on standard error.

    Raises
    ------
    ServiceError
        If a request fails, a fit fails, or a fit takes longer than ``fit_timeout``.
    """
    started = time.monotonic()
    streams = {task_name(target.user): target}
    streams.update({task_name(source.user): source for source in sources})
    posted = dict.fromkeys(streams, 0)
    body = {
        "name": name,
        "dimension": feature_map.dimension,
        "rank": rank,
        "source_tasks": [task_name(source.user) for source in sources],
        "target_task": task_name(target.user),
        "relevance": None,
        "prior": None,
        "budget": budget.as_json(),
        "settings": dict(settings or {}),
    }
    study = client.create_study(body)
    study_id = str(study["id"])
    logger.info("demo.campaign.created study_id=%s name=%s", study_id, name)

    collected = CollectedLabels()
    models: dict[str, dict[str, Any]] = {}
    fits: list[dict[str, Any]] = []
    rounds = 0
    bar = tqdm(
        total=budget.total,
        unit="label",
        desc=name,
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    try:
        while True:
            quotas = client.quotas(study_id, batch=batch_size)
            phase = str(quotas["phase"])
            if phase == "complete":
                break
            plan = batch_plan(quotas)
            if not plan:
                fit = _wait_for_phase_fit(
                    client,
                    study_id,
                    phase,
                    {str(done.get("id")) for done in fits},
                    fit_timeout,
                    poll_interval,
                )
                fits.append(fit)
                models[phase] = client.model(study_id)
                continue

            for task, count in plan.items():
                if task not in streams:
                    raise ServiceError(f"the quotas list an unknown task {task!r}")
                drawn = streams[task].take(posted[task], posted[task] + count)
                posted[task] += count
                client.post_comparisons(study_id, task, drawn.X, drawn.y)
                collected.add(phase, task, drawn.X, drawn.y)
                bar.update(count)
            rounds += 1
            bar.set_postfix(phase=phase, round=rounds)
    finally:
        bar.close()

    seconds = time.monotonic() - started
    logger.info(
        "demo.campaign.complete study_id=%s rounds=%d seconds=%.1f",
        study_id,
        rounds,
        seconds,
    )
    return CampaignResult(study_id, collected, models, fits, rounds, seconds)


def _wait_for_phase_fit(
    client: ServiceClient,
    study_id: str,
    phase: str,
    seen_fit_ids: set[str],
    timeout: float,
    poll_interval: float,
) -> dict[str, Any]:
    """Wait until the study leaves ``phase``, and return the fit that moved it.

    The service queues this fit itself when the phase's quotas are met and moves
    the study to the next phase when it succeeds. A new fit that failed raises.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = client.study(study_id)
        latest = study.get("latest_fit") or {}
        fit_id = latest.get("id")
        if study["phase"] != phase:
            return client.fit(study_id, str(fit_id)) if fit_id else dict(latest)
        if fit_id and str(fit_id) not in seen_fit_ids:
            if latest.get("status") == "failed":
                fit = client.fit(study_id, str(fit_id))
                raise ServiceError(
                    f"fit {fit_id} of study {study_id} ({phase} phase) failed: "
                    f"{fit.get('error')}"
                )
        time.sleep(poll_interval)
    raise ServiceError(
        f"study {study_id} did not leave the {phase} phase within {timeout:.0f} s "
        "after its quotas were met; check the service log for the fit job"
    )
