"""Domain errors that carry their HTTP status, rendered as RFC 9457 problem details.

Services raise these; :mod:`app.main` renders every one of them, and every
framework error, as ``application/problem+json`` with the members ``type``,
``title``, ``status``, ``detail`` and ``instance``. Validation problems add
``errors``: one entry per bad value with ``index`` (row of a batch, or null),
``field`` (dotted path inside the row or body) and ``reason``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:prefbudget:problem:"
# Detail of the 422 for a request body that is not JSON, the same on every endpoint.
INVALID_JSON_DETAIL = "the request body is not valid JSON"


@dataclass(frozen=True)
class FieldError:
    """One invalid value: its batch row (or None), its field path and the reason."""

    index: int | None
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


class Problem(Exception):
    """Base class of errors that map to one HTTP status and a problem type."""

    status: int = 500
    title: str = "Internal server error"
    slug: str = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra or {}
        self.headers = headers

    @property
    def type(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.slug

    def to_body(self, instance: str | None) -> dict[str, Any]:
        """Build the JSON body of the problem-details response."""
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors is not None:
            body["errors"] = [error.as_dict() for error in self.errors]
        body.update(self.extra)
        return body


class BadRequest(Problem):
    status = 400
    title = "Bad request"
    slug = "bad-request"


class NotFound(Problem):
    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(Problem):
    status = 409
    title = "Conflict"
    slug = "conflict"


class ContentTooLarge(Problem):
    status = 413
    title = "Content too large"
    slug = "content-too-large"


class UnsupportedMediaType(Problem):
    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class ValidationProblem(Problem):
    """Invalid request content; ``errors`` lists every bad value found."""

    status = 422
    title = "Validation failed"
    slug = "validation-error"

    def __init__(
        self,
        detail: str,
        errors: list[FieldError],
        *,
        total_errors: int | None = None,
    ) -> None:
        total = len(errors) if total_errors is None else total_errors
        super().__init__(detail, errors=errors, extra={"total_errors": total})


class ServiceUnavailable(Problem):
    status = 503
    title = "Service unavailable"
    slug = "service-unavailable"


class StudyNotFound(NotFound):
    """No study has the requested id."""

    def __init__(self, study_id: str) -> None:
        super().__init__(f"study '{study_id}' not found")
        self.study_id = study_id
