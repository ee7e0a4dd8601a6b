"""Response models of the fit and model endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import UTCDatetime


class FitCreate(BaseModel):
    """Options of a manual fit. It has none yet: send `{}` or no body."""

    model_config = ConfigDict(extra="forbid", strict=True)


class FitOut(BaseModel):
    """A fit of a study and the state of its job."""

    id: str = Field(description="Fit id (UUID).")
    study_id: str = Field(description="Study id.")
    status: Literal["queued", "running", "succeeded", "failed"] = Field(
        description=(
            "`queued` until a worker claims it, `running` while the solver "
            "computes, then `succeeded` or `failed`."
        )
    )
    phase: Literal["pilot", "main", "complete"] = Field(
        description="Phase the fit serves: the study's phase when it was queued."
    )
    trigger: Literal["auto", "manual"] = Field(
        description=(
            "`auto` when the service queued it because the phase's quotas were "
            "met, `manual` for POST /fits."
        )
    )
    created_at: UTCDatetime = Field(description="When the fit was queued (UTC).")
    started_at: UTCDatetime | None = Field(
        description="When the current or last attempt started (UTC)."
    )
    finished_at: UTCDatetime | None = Field(
        description="When the fit succeeded or failed (UTC)."
    )
    heartbeat_at: UTCDatetime | None = Field(
        description="Last heartbeat of the worker running the fit (UTC)."
    )
    attempts: int = Field(description="Attempts started so far.")
    worker_id: str | None = Field(description="Worker that ran the last attempt.")
    labels: dict[str, int] = Field(
        description="Labels used per task (empty until the fit succeeds)."
    )
    relevance: dict[str, float] | None = Field(
        description=(
            "Relevance per source task: estimated by a pilot fit, the pilot "
            "estimate or the given relevance for later fits."
        )
    )
    rank: int | None = Field(description="Rank k of the fitted subspace.")
    confidence_radius: float | None = Field(
        description="Radius r of the confidence set ||theta - theta_hat||_Lambda <= r."
    )
    diagnostics: dict[str, Any] | None = Field(
        description=(
            "Solver record: convergence of each fit, ridge weights, the rank "
            "choice, the Lasso certificate, the radius rule, labels per phase and "
            "the run time."
        )
    )
    error: str | None = Field(
        description=(
            "Why the last attempt failed (also kept while a fit is queued again "
            "after a worker stopped)."
        )
    )


class FitPage(BaseModel):
    """Fits of a study, newest first."""

    items: list[FitOut] = Field(description="Fits, newest first.")


class ModelOut(BaseModel):
    """The model of the latest succeeded fit."""

    study_id: str = Field(description="Study id.")
    fit_id: str = Field(description="Fit that produced the model.")
    phase: Literal["pilot", "main", "complete"] = Field(
        description="Phase the fit served."
    )
    finished_at: UTCDatetime | None = Field(description="When the fit succeeded (UTC).")
    theta: list[float] = Field(
        description=(
            "Target parameter estimate theta_hat (d numbers). After the pilot "
            "phase it is the full-dimensional ridge fit on the pilot target labels."
        )
    )
    relevance: dict[str, float] = Field(description="Relevance per source task.")
    basis: list[list[float]] = Field(
        description="Orthonormal basis of the learned subspace: k vectors of d numbers."
    )
    rank: int = Field(description="Rank k.")
    confidence_radius: float = Field(
        description="Radius r of the confidence set ||theta - theta_hat||_Lambda <= r."
    )
    source_thetas: dict[str, list[float]] = Field(
        description="Estimated parameter of each source task (d numbers each)."
    )
