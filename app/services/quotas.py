"""Label quotas of a study: what each task should collect in the current phase.

Planned counts per phase:

- Algorithm 2, pilot phase: the source tasks split ``budget.pilot_source`` by
  Active-Sample (eq. 3.1) with the prior (uniform when none was given), and
  the target gets ``budget.pilot_target``.
- Algorithm 2, main phase: the source tasks split ``budget.source`` by
  Active-Sample with the relevance estimated by the pilot fit, and the target
  gets ``budget.target``. These are counts of *main-phase* labels: the
  method draws fresh samples in its second phase, so pilot labels do not
  count towards them, even though the final fit uses the pilot labels as well
  unless the study sets ``strict_phase_split``.
- Algorithm 1 (known relevance), main phase: the source tasks split
  ``budget.source`` by Active-Sample with the given relevance. The target
  gets 0 because its estimate is the relevance-weighted sum of the source
  estimates. Target labels posted anyway are stored but not used by the fit.
- Complete: the plan of the main phase, with labels posted after completion
  counted as collected as well.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import queries
from app.db.models import Fit, Study, Task
from solvers.allocation import active_sample, split_batch

# Labels of these phases count towards the quotas of the phase named by the key.
COUNTED_PHASES: dict[str, tuple[str, ...]] = {
    "pilot": ("pilot",),
    "main": ("main",),
    "complete": ("main", "complete"),
}


@dataclass(frozen=True)
class TaskQuota:
    """Planned and collected labels of one task in the current phase."""

    task: str
    role: str
    collected: int
    planned: int

    @property
    def remaining(self) -> int:
        return max(self.planned - self.collected, 0)


@dataclass(frozen=True)
class QuotaPlan:
    """Planned label counts of one phase, in task order (sources, then target).

    ``fit_id`` names the fit whose relevance estimate set the source quotas
    (the pilot fit in the main phase of Algorithm 2), or is None when the
    quotas come from the prior or the given relevance.
    """

    phase: str
    tasks: list[Task]
    planned: list[int]
    fit_id: str | None


@dataclass(frozen=True)
class QuotaReport:
    """Quotas of the current phase and, on request, the split of the next batch."""

    phase: str
    fit_id: str | None
    tasks: list[TaskQuota]
    next_batch: dict[str, int] | None

    @property
    def met(self) -> bool:
        return all(task.remaining == 0 for task in self.tasks)


def source_tasks(study: Study) -> list[Task]:
    """Return the study's source tasks in position order."""
    return [task for task in study.tasks if task.role == "source"]


def target_task(study: Study) -> Task:
    """Return the study's target task."""
    return next(task for task in study.tasks if task.role == "target")


def weights_vector(
    weights: Mapping[str, float] | None, tasks: Sequence[Task]
) -> np.ndarray:
    """Order a ``{task name: weight}`` mapping by ``tasks``; None gives zeros.

    A zero vector makes Active-Sample split uniformly. Names missing from the
    mapping get weight 0.
    """
    if weights is None:
        return np.zeros(len(tasks))
    return np.array([float(weights.get(task.name, 0.0)) for task in tasks])


def pilot_fit(session: Session, study_id: str) -> Fit | None:
    """Return the newest succeeded fit of the pilot phase, or None."""
    statement = (
        select(Fit)
        .where(
            Fit.study_id == study_id,
            Fit.phase == "pilot",
            Fit.status == "succeeded",
        )
        .order_by(Fit.finished_at.desc(), Fit.created_at.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def plan_phase(session: Session, study: Study, phase: str | None = None) -> QuotaPlan:
    """Compute the planned label counts of ``phase`` (default: the current one)."""
    phase = study.phase if phase is None else phase
    sources = source_tasks(study)
    target = target_task(study)
    budget = study.budget

    fit_id: str | None = None
    if study.algorithm == "known_relevance":
        relevance = weights_vector(study.relevance, sources)
        source_counts = active_sample(int(budget["source"]), relevance)
        target_count = 0
    elif phase == "pilot":
        prior = weights_vector(study.prior, sources)
        source_counts = active_sample(int(budget.get("pilot_source") or 0), prior)
        target_count = int(budget.get("pilot_target") or 0)
    else:
        fit = pilot_fit(session, study.id)
        relevance = weights_vector(fit.relevance if fit else None, sources)
        fit_id = fit.id if fit else None
        source_counts = active_sample(int(budget["source"]), relevance)
        target_count = int(budget["target"])

    planned = [int(count) for count in source_counts] + [target_count]
    return QuotaPlan(phase, [*sources, target], planned, fit_id)


def collected_counts(session: Session, study_id: str) -> dict[int, dict[str, int]]:
    """Return the number of stored labels per task id and phase.

    Reads the ``label_counts`` table, which ingest keeps equal to a grouped
    count of the study's comparisons, so the cost does not grow with the
    number of stored labels.
    """
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for task_id, phase, count in queries.phase_label_counts(session, study_id):
        counts[task_id][phase] = count
    return counts


def quota_report(
    session: Session, study: Study, *, batch: int | None = None
) -> QuotaReport:
    """Build the quotas of the study's current phase.

    With ``batch``, ``next_batch`` splits the next ``batch`` labels over the
    tasks in proportion to what they still need (a task never gets more than
    its remaining count, and the split sums to ``min(batch, total remaining)``).
    """
    plan = plan_phase(session, study)
    counts = collected_counts(session, study.id)
    phases = COUNTED_PHASES[plan.phase]
    tasks = [
        TaskQuota(
            task=task.name,
            role=task.role,
            collected=sum(counts.get(task.id, {}).get(phase, 0) for phase in phases),
            planned=planned,
        )
        for task, planned in zip(plan.tasks, plan.planned, strict=True)
    ]

    next_batch = None
    if batch is not None:
        split = split_batch(batch, [task.remaining for task in tasks])
        next_batch = {
            task.task: int(count) for task, count in zip(tasks, split, strict=True)
        }
    return QuotaReport(plan.phase, plan.fit_id, tasks, next_batch)
