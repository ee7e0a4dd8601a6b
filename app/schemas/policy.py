"""Request and response models of the policy endpoint."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from app.schemas.common import MAX_ABS_FEATURE

# Largest confidence radius a request may set. The radius multiplies
# ||phi||_{Lambda^-1}, and beyond this bound the lower bounds lose all
# meaning long before they overflow.
MAX_CONFIDENCE_RADIUS = 1e6


class PolicyContext(BaseModel):
    """One context (prompt) and the features of its candidate actions (responses)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | int | None = Field(
        default=None, description="Optional client key, echoed in the decision."
    )
    actions: list[list[float]] = Field(
        description=(
            f"Features phi(s, a) of each candidate action: d finite numbers "
            f"each, of absolute value at most {MAX_ABS_FEATURE:g}."
        )
    )
    reference: Literal["mean"] | StrictInt | None = Field(
        default=None,
        description=(
            "What each action is measured against: null for no shift, `mean` for "
            "the mean of the candidates, or the index of a baseline candidate. "
            "Preferences only identify feature differences, so the reference "
            "decides what the pessimism term penalises."
        ),
    )

    @field_validator("reference", mode="before")
    @classmethod
    def _check_reference(cls, value: Any) -> Any:
        # Without this check pydantic reports one error per union member.
        # bool is a subclass of int but is no action index.
        if value is None or value == "mean":
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError('must be null, "mean" or an action index')


class PolicyRequest(BaseModel):
    """Contexts to decide, and how to decide them."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "contexts": [
                        {
                            "id": "prompt-1",
                            "actions": [[0.1, 0.4, -0.2], [0.3, -0.1, 0.0]],
                            "reference": "mean",
                        }
                    ],
                    "mode": "pessimistic",
                }
            ]
        },
    )

    contexts: list[PolicyContext] = Field(
        description="Contexts to decide, at least one."
    )
    mode: Literal["pessimistic", "lower_confidence_bound", "greedy"] = Field(
        default="pessimistic",
        description=(
            "`pessimistic`: batch max-min over the confidence set, with the "
            "contexts as the context distribution. `lower_confidence_bound`: per "
            "context, the action with the largest lower bound. `greedy`: the "
            "largest estimate."
        ),
    )
    confidence_radius: float | None = Field(
        default=None,
        ge=0,
        le=MAX_CONFIDENCE_RADIUS,
        allow_inf_nan=False,
        description=(
            f"Radius r to use instead of the fit's, at most "
            f"{MAX_CONFIDENCE_RADIUS:g}; null keeps the fit's."
        ),
    )


class PolicyDecision(BaseModel):
    """The action chosen for one context."""

    id: str | int | None = Field(description="The context's `id` from the request.")
    action: int = Field(description="Zero-based index of the chosen action.")
    estimate: float = Field(
        description="phi~ . theta_hat of the chosen action (after the reference shift)."
    )
    lower_bound: float = Field(
        description="phi~ . theta_hat - r ||phi~||_{Lambda^-1} of the chosen action."
    )


class PolicyOut(BaseModel):
    """Decisions for every context, with the model and solve that produced them."""

    fit_id: str = Field(description="Fit whose model was used.")
    mode: str = Field(description="Mode requested.")
    confidence_radius: float = Field(description="Radius r used.")
    decisions: list[PolicyDecision] = Field(
        description="One decision per context, in request order."
    )
    value: float = Field(
        description=(
            "Worst-case mean value over the confidence set of the chosen actions."
        )
    )
    stochastic_value: float = Field(
        description="Worst-case value of the stochastic max-min policy."
    )
    gap: float = Field(
        description=(
            "Duality gap of the max-min solve in `pessimistic` mode. The other "
            "modes solve no max-min problem and report 0."
        )
    )
    converged: bool = Field(description="Whether the solve reached its tolerance.")
