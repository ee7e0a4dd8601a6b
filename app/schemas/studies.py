"""Request and response models of the study endpoints.

Request bodies are validated in strict mode: a number must be a JSON number
(not a string or a boolean) and an integer field rejects ``1.0``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import NulFreeStr, UTCDatetime
from solvers.algorithms import SolverSettings

# Largest feature dimension d of a study. Each fit stores d x d float64
# matrices (128 MiB each at d = 4096) and solves d-dimensional problems, so
# larger dimensions are rejected instead of exhausting a worker's memory.
MAX_DIMENSION = 4096
# Largest value of each label budget, in comparisons.
MAX_BUDGET = 1_000_000_000

TaskName = Annotated[NulFreeStr, Field(min_length=1, max_length=200)]
# Largest absolute relevance or prior weight. Allocation only uses ratios of
# weights, and larger values overflow the l1 norm well before 1e308. The sign
# of a prior weight is checked with the other cross-field rules, so that one
# 422 lists every error of the body.
MAX_ABS_WEIGHT = 1e6
RelevanceWeight = Annotated[float, Field(ge=-MAX_ABS_WEIGHT, le=MAX_ABS_WEIGHT)]
PriorWeight = Annotated[float, Field(ge=-MAX_ABS_WEIGHT, le=MAX_ABS_WEIGHT)]


class Budget(BaseModel):
    """Label budgets of a study, in comparisons."""

    model_config = ConfigDict(extra="forbid", strict=True)

    source: int = Field(
        ge=0,
        le=MAX_BUDGET,
        description=(
            f"Labels spent on the source tasks in the main phase, at most "
            f"{MAX_BUDGET}. It must give every source task at least one label: "
            "Algorithm 1 splits it by Active-Sample with the given relevance, and "
            "Algorithm 2 needs at least 2 per source task, because half of it is "
            "split uniformly."
        ),
    )
    target: int = Field(
        default=0,
        ge=0,
        le=MAX_BUDGET,
        description=(
            f"Labels spent on the target task in the main phase, at most "
            f"{MAX_BUDGET}. Algorithm 2 needs at least 1. Algorithm 1 uses no "
            "target labels (its target estimate is the relevance-weighted sum "
            "of the source estimates), so it must be 0 or left out there."
        ),
    )
    pilot_source: int | None = Field(
        default=None,
        ge=0,
        le=MAX_BUDGET,
        description=(
            f"Labels spent on the source tasks in the pilot phase, at most "
            f"{MAX_BUDGET}. Required when `relevance` is null (Algorithm 2), "
            "where its Active-Sample split by the prior must give every source "
            "task at least one label. Algorithm 1 has no pilot phase: give null "
            "or 0."
        ),
    )
    pilot_target: int | None = Field(
        default=None,
        ge=0,
        le=MAX_BUDGET,
        description=(
            f"Labels spent on the target task in the pilot phase, at most "
            f"{MAX_BUDGET}. Required and at least 1 when `relevance` is null "
            "(Algorithm 2). Algorithm 1 has no pilot phase: give null or 0."
        ),
    )


# Study settings handled by the service itself rather than by the solver,
# with their types and descriptions.
SERVICE_SETTINGS: dict[str, tuple[type, str]] = {
    "strict_phase_split": (
        bool,
        "when true, the final fit of Algorithm 2 uses main-phase labels only; "
        "by default it also uses the pilot labels",
    ),
}


def _describe_settings() -> str:
    """Build the `settings` field description from the solver's setting fields."""
    defaults = SolverSettings()
    solver_keys = ", ".join(
        f"`{field.name}` ({json.dumps(getattr(defaults, field.name))})"
        for field in dataclasses.fields(SolverSettings)
    )
    service_keys = "; ".join(
        f"`{key}` ({kind.__name__}): {text}"
        for key, (kind, text) in SERVICE_SETTINGS.items()
    )
    return (
        "Overrides of the solver constants and of the study behaviour. Solver "
        f"settings, with their defaults: {solver_keys}. Numbers must be JSON "
        "numbers and `rank_candidates` a list of ranks; a null default means "
        "that the solver applies its documented rule. Study settings: "
        f"{service_keys}. Unknown keys and values of the wrong type are "
        "rejected with 422 naming the key."
    )


SETTINGS_DESCRIPTION = _describe_settings()


class StudyCreate(BaseModel):
    """A new study: its tasks, the relevance or prior, budgets and settings."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "helpfulness-from-style",
                    "dimension": 64,
                    "rank": 3,
                    "source_tasks": ["coherence", "tone", "safety"],
                    "target_task": "helpfulness",
                    "relevance": None,
                    "prior": {"coherence": 1, "tone": 1, "safety": 2},
                    "budget": {
                        "source": 6000,
                        "target": 500,
                        "pilot_source": 1500,
                        "pilot_target": 300,
                    },
                    "settings": {"confidence_level": 0.9},
                }
            ]
        },
    )

    name: NulFreeStr = Field(min_length=1, max_length=200, description="Study name.")
    dimension: int = Field(
        ge=1,
        le=MAX_DIMENSION,
        description=(
            f"Feature dimension d of every comparison in the study, between 1 "
            f"and {MAX_DIMENSION}."
        ),
    )
    rank: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DIMENSION,
        description=(
            "Rank k of the shared low-dimensional subspace, between 1 and "
            "min(dimension, number of source tasks); null lets the solver choose "
            "it from the source data by held-out likelihood."
        ),
    )
    source_tasks: list[TaskName] = Field(
        min_length=1, description="Names of the source tasks, in a fixed order."
    )
    target_task: TaskName = Field(description="Name of the target task.")
    relevance: dict[str, RelevanceWeight] | None = Field(
        default=None,
        description=(
            "Known relevance nu_m of each source task to the target, keyed by "
            f"source task name: numbers in [-{MAX_ABS_WEIGHT:g}, {MAX_ABS_WEIGHT:g}] "
            "(Algorithm 1, no pilot phase, no "
            "target labels). Null runs Algorithm 2: a pilot phase estimates "
            "the relevance."
        ),
    )
    prior: dict[str, PriorWeight] | None = Field(
        default=None,
        description=(
            "Prior weight of each source task for the pilot phase of Algorithm 2, "
            f"keyed by source task name: numbers in [0, {MAX_ABS_WEIGHT:g}], not "
            "all zero. Null means "
            "uniform. Only allowed when `relevance` is null."
        ),
    )
    budget: Budget = Field(description="Label budgets.")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description=SETTINGS_DESCRIPTION,
        examples=[{"confidence_level": 0.9, "strict_phase_split": False}],
    )


class TaskOut(BaseModel):
    """A task of a study with its label count."""

    name: str = Field(description="Task name.")
    role: Literal["source", "target"] = Field(description="Role of the task.")
    labels: int = Field(description="Comparisons stored for the task, all phases.")


class FitSummary(BaseModel):
    """Status of the most recent fit of a study."""

    id: str = Field(description="Fit id.")
    status: Literal["queued", "running", "succeeded", "failed"] = Field(
        description="Fit status."
    )
    phase: str = Field(description="Phase whose labels the fit serves.")
    created_at: UTCDatetime = Field(description="When the fit was queued (UTC).")
    finished_at: UTCDatetime | None = Field(
        default=None, description="When the fit succeeded or failed."
    )


class StudyOut(BaseModel):
    """A study as stored."""

    id: str = Field(description="Study id (UUID).")
    name: str = Field(description="Study name.")
    dimension: int = Field(description="Feature dimension d.")
    rank: int | None = Field(description="Requested rank k; null means chosen by fit.")
    algorithm: Literal["known_relevance", "active"] = Field(
        description=(
            "`known_relevance` (Algorithm 1: relevance given) or `active` "
            "(Algorithm 2: pilot phase, then main phase)."
        )
    )
    phase: Literal["pilot", "main", "complete"] = Field(
        description="Current phase; new comparisons are stored with it."
    )
    tasks: list[TaskOut] = Field(description="Source tasks in order, then the target.")
    relevance: dict[str, float] | None = Field(
        description="Relevance given at creation (Algorithm 1), else null."
    )
    prior: dict[str, float] | None = Field(
        description="Pilot prior given at creation, else null."
    )
    budget: Budget = Field(description="Label budgets.")
    settings: dict[str, Any] = Field(description="Setting overrides given at creation.")
    latest_fit: FitSummary | None = Field(
        description="Most recent fit of any status, or null before the first fit."
    )
    created_at: UTCDatetime = Field(description="Creation time (UTC).")
    updated_at: UTCDatetime = Field(description="Time of the last change (UTC).")


class StudyPage(BaseModel):
    """One page of studies, newest first."""

    items: list[StudyOut] = Field(description="Studies on this page.")
    next_cursor: str | None = Field(
        description="Opaque cursor of the next page, or null on the last page."
    )
