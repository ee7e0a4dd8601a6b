"""Request and response models of the study endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskName = Annotated[str, Field(min_length=1, max_length=200)]


class Budget(BaseModel):
    """Label budgets of a study, in comparisons."""

    model_config = ConfigDict(extra="forbid")

    source: int = Field(
        ge=0, description="Labels spent on the source tasks in the main phase."
    )
    target: int = Field(ge=0, description="Labels spent on the target task.")
    pilot_source: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Labels spent on the source tasks in the pilot phase. Required when "
            "`relevance` is null (Algorithm 2); unused otherwise."
        ),
    )
    pilot_target: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Labels spent on the target task in the pilot phase. Required when "
            "`relevance` is null (Algorithm 2); unused otherwise."
        ),
    )


class StudyCreate(BaseModel):
    """A new study: its tasks, the relevance or prior, budgets and settings."""

    model_config = ConfigDict(
        extra="forbid",
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

    name: str = Field(min_length=1, max_length=200, description="Study name.")
    dimension: int = Field(
        ge=1, description="Feature dimension d of every comparison in the study."
    )
    rank: int | None = Field(
        default=None,
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
    relevance: dict[str, float] | None = Field(
        default=None,
        description=(
            "Known relevance nu_m of each source task to the target, keyed by "
            "source task name (Algorithm 1, no pilot phase). Null runs "
            "Algorithm 2: a pilot phase estimates the relevance."
        ),
    )
    prior: dict[str, float] | None = Field(
        default=None,
        description=(
            "Prior weight of each source task for the pilot phase of Algorithm 2, "
            "keyed by source task name: non-negative, not all zero. Null means "
            "uniform. Only allowed when `relevance` is null."
        ),
    )
    budget: Budget = Field(description="Label budgets.")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Overrides of the solver constants and of the study behaviour. Known "
            "keys: `ridge_scale`, `lasso_penalty`, `ellipsoid_radius`, "
            "`confidence_level`, `confidence_radius`, `rank_candidates`, `tol`, "
            "`max_iter` (solver) and `strict_phase_split` (when true the final fit "
            "uses main-phase labels only; by default it also uses the pilot "
            "labels). Unknown keys are rejected."
        ),
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
    created_at: datetime = Field(description="When the fit was queued.")
    finished_at: datetime | None = Field(
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
    created_at: datetime = Field(description="Creation time (UTC).")
    updated_at: datetime = Field(description="Time of the last change (UTC).")


class StudyPage(BaseModel):
    """One page of studies, newest first."""

    items: list[StudyOut] = Field(description="Studies on this page.")
    next_cursor: str | None = Field(
        description="Opaque cursor of the next page, or null on the last page."
    )
