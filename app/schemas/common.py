"""Types, limits and models shared by every endpoint.

- :data:`NulFreeStr`: a string that rejects the NUL character. PostgreSQL
  cannot store U+0000 in text or JSON columns, so every string the service
  stores uses this type and a NUL gives 422 on every database.
- :data:`UTCDatetime`: a response datetime that is always timezone-aware
  UTC. SQLite returns stored times without a zone, so a naive value is
  taken to be UTC.
- :data:`MAX_ABS_FEATURE`: the largest absolute value accepted for a feature
  coordinate anywhere (comparisons and policy actions).
- :func:`is_resource_id`: whether a path id has the shape of the UUIDs that
  the service issues. Other ids get 404 before any query.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

# Largest absolute feature coordinate. Products of larger features with the
# model parameters and the curvature can overflow float64, so such values are
# rejected with 422.
MAX_ABS_FEATURE = 1e6

# Ids of studies, fits and keys are lowercase UUID strings (``str(uuid4())``).
RESOURCE_ID_PATTERN = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


def is_resource_id(value: str) -> bool:
    """Return whether ``value`` has the shape of a study, fit or key id."""
    return RESOURCE_ID_PATTERN.fullmatch(value) is not None


def _reject_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError(
            "string_nul_character", "must not contain the NUL character (U+0000)"
        )
    return value


NulFreeStr = Annotated[str, AfterValidator(_reject_nul)]


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UTCDatetime = Annotated[datetime, AfterValidator(_as_utc)]


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


PROBLEM_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request.",
    404: "The study does not exist.",
    409: "A client id was already used for a comparison with other content.",
    413: "The body or the batch is larger than the configured maximum.",
    415: "The body has an unsupported media type.",
    422: "The request content is invalid; `errors` lists every bad value.",
    503: "The database is unreachable or its schema is not at the head revision.",
}


def problem_responses(
    *statuses: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, object]]:
    """Build the ``responses=`` entries that document problem-details errors.

    ``descriptions`` replaces the default text of a status for one route, for
    example what a 404 means there.
    """
    texts = PROBLEM_DESCRIPTIONS | (descriptions or {})
    return {
        status: {
            "model": ProblemDetails,
            "description": texts[status],
            "content": {"application/problem+json": {}},
        }
        for status in statuses
    }
