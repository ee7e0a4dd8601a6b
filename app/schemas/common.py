"""Models shared by every endpoint: problem details and pagination."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ProblemFieldError(BaseModel):
    """One invalid value inside a request."""

    index: int | None = Field(
        description=(
            "Zero-based row of the batch or import file that holds the value; "
            "null when the value is not part of a row."
        ),
        examples=[3],
    )
    field: str = Field(
        description="Dotted path of the value inside the row or the request body.",
        examples=["features"],
    )
    reason: str = Field(
        description="Why the value was rejected.",
        examples=["expected 64 values, got 63"],
    )


class ProblemDetails(BaseModel):
    """Error body in the RFC 9457 problem-details format."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="URI that identifies the problem type.",
        examples=["urn:prefbudget:problem:validation-error"],
    )
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="HTTP status code.", examples=[422])
    detail: str = Field(description="Explanation of this occurrence of the problem.")
    instance: str | None = Field(
        default=None, description="Path of the request that caused the problem."
    )
    errors: list[ProblemFieldError] | None = Field(
        default=None,
        description=(
            "Every invalid value found (validation problems only), up to the "
            "configured maximum."
        ),
    )
    total_errors: int | None = Field(
        default=None,
        description="Number of invalid values found (validation problems only).",
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """Build the ``responses=`` entries that document problem-details errors."""
    descriptions = {
        400: "Malformed request.",
        404: "The study does not exist.",
        409: "A client id was already used for a comparison with other content.",
        413: "The body or the batch is larger than the configured maximum.",
        415: "The body has an unsupported media type.",
        422: "The request content is invalid; `errors` lists every bad value.",
        503: "The database is unreachable or its schema is not at the head revision.",
    }
    return {
        status: {
            "model": ProblemDetails,
            "description": descriptions[status],
            "content": {"application/problem+json": {}},
        }
        for status in statuses
    }
