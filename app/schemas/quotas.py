"""Response model of the quota endpoint."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TaskQuotaOut(BaseModel):
    """Planned and collected labels of one task in the current phase."""

    task: str = Field(description="Task name.")
    role: Literal["source", "target"] = Field(description="Role of the task.")
    collected: int = Field(
        description=(
            "Labels of the task stored in the current phase (in the `complete` "
            "phase: labels of the main phase and after)."
        )
    )
    planned: int = Field(description="Labels the current phase plans for the task.")
    remaining: int = Field(description="max(planned - collected, 0).")


class QuotasOut(BaseModel):
    """Quotas of a study's current phase and the split of the next batch."""

    study_id: str = Field(description="Study id.")
    phase: Literal["pilot", "main", "complete"] = Field(description="Current phase.")
    fit_id: str | None = Field(
        description=(
            "Fit whose relevance estimate set the source quotas (the pilot fit, "
            "in the main phase of Algorithm 2); null when the quotas come from "
            "the prior or the given relevance."
        )
    )
    tasks: list[TaskQuotaOut] = Field(
        description="One entry per task: the sources in order, then the target."
    )
    next_batch: dict[str, int] | None = Field(
        description=(
            "With `?batch=B`: how many of the next B labels each task should get, "
            "in proportion to what it still needs. Sums to min(B, total "
            "remaining). Null without `batch`."
        )
    )
    quotas_met: bool = Field(
        description=(
            "Whether every task has collected its planned labels. When the phase "
            "is pilot or main, the service has then queued the fit that ends it."
        )
    )
