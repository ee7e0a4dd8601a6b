"""Application factory: routers, middleware and problem-details error handlers."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__, metrics
from app.api import comparisons, fits, health, keys, model, policy, quotas, studies
from app.auth.config import auth_settings
from app.auth.dependencies import (
    API_DEPENDENCIES,
    AUTH_RESPONSES,
    check_auth_configuration,
)
from app.db.engine import create_db_engine, create_session_factory
from app.docs_ui import install_docs
from app.jobs.runner import start_in_process_runner
from app.logs import log_context
from app.problems import (
    INVALID_JSON_DETAIL,
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_PREFIX,
    FieldError,
    Problem,
    ValidationProblem,
)
from app.schemas.comparisons import batch_adapter
from app.settings import Settings

logger = logging.getLogger(__name__)

# Version of the HTTP API contract; the package version is separate and is
# reported as `x-package-version` in the OpenAPI info.
API_VERSION = "1.0.0"

DESCRIPTION = """\
prefbudget is a REST service for active multi-task RLHF label budgeting. It
decides how to spend a budget of pairwise-preference labels across a target
task and related source tasks, learns a shared low-rank reward model from
them, and picks responses with a pessimistic (lower-confidence-bound) policy.

Create a study, post comparisons as they are labeled, ask the quotas which
tasks to label next, and ask the policy which response to pick. Fits run in
the background; their status is under `/fits`.

Every `/v1` request needs an API key sent as `Authorization: Bearer <key>`.
Every error is an RFC 9457 problem-details body (`application/problem+json`);
validation errors list every bad value in `errors` with its row `index`,
`field` and `reason`.

This document describes version 1 of the API contract: paths and fields only
get added within it.
"""

OPENAPI_TAGS = [
    {"name": "studies", "description": "Labeling campaigns and their tasks."},
    {"name": "comparisons", "description": "Upload, import and export labels."},
    {"name": "fits", "description": "Model fits, run outside the request path."},
    {"name": "quotas", "description": "Which tasks to label next."},
    {"name": "policy", "description": "Response choice with the fitted model."},
    {"name": "health", "description": "Liveness and readiness probes."},
]

# Routers added by other parts of the service; each module exposes `router`.
# A module that is not installed is skipped with a log line.

STUDY_PATH = re.compile(r"^/v1/studies/([^/]+)")
IMPORT_PATH = re.compile(r"^/v1/studies/[^/]+/comparisons/import/?$")


def problem_response(
    status: int,
    title: str,
    detail: str,
    instance: str | None,
    *,
    slug: str | None = None,
    errors: list[FieldError] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build an ``application/problem+json`` response.

    Without ``slug`` the problem type is derived from the status phrase, for
    example ``urn:prefbudget:problem:method-not-allowed``.
    """
    if slug is None:
        slug = _status_problem(status)[1]
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = [error.as_dict() for error in errors]
    if extra:
        body.update(extra)
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


# Titles and problem types of statuses that app.problems also uses, so a
# framework error and a domain error of one status look the same.
STATUS_PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("Bad request", "bad-request"),
    404: ("Not found", "not-found"),
    409: ("Conflict", "conflict"),
    413: ("Content too large", "content-too-large"),
    415: ("Unsupported media type", "unsupported-media-type"),
    503: ("Service unavailable", "service-unavailable"),
}


def _status_problem(status: int) -> tuple[str, str]:
    """Return the title and problem-type slug of an HTTP status."""
    if status in STATUS_PROBLEMS:
        return STATUS_PROBLEMS[status]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error", "http-error"
    title = phrase[0] + phrase[1:].lower()
    return title, re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-")


class BodyLimitMiddleware:
    """Reject request bodies over the configured size with 413.

    Checks ``Content-Length`` before the app runs, and counts the bytes
    actually received, so a chunked or lying request is stopped as soon as it
    passes the limit. The bulk import path has its own, larger limit.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_import_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_import_bytes = max_import_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = (
            self.max_import_bytes if IMPORT_PATH.match(path) else self.max_body_bytes
        )
        detail = f"the request body is larger than the maximum of {limit} bytes"

        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            logger.info("request.body_too_large path=%s bytes=%s", path, declared)
            response = problem_response(
                413, "Content too large", detail, path, slug="content-too-large"
            )
            await response(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    logger.info("request.body_too_large path=%s streamed=true", path)
                    # FastAPI passes HTTPException through its body parsing
                    # unchanged; the handler renders it as a problem.
                    raise StarletteHTTPException(413, detail)
            return message

        await self.app(scope, limited_receive, send)


class StudyLogContextMiddleware:
    """Bind the study id of ``/v1/studies/{study_id}/...`` paths to log records."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            STUDY_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        with log_context(study_id=match.group(1)):
            await self.app(scope, receive, send)


# FastAPI returns a 400 with this detail when json.loads fails with anything
# other than a JSONDecodeError (deep nesting, invalid UTF-8, an over-long
# integer). The handler turns it into the same 422 as other invalid JSON.
FASTAPI_BODY_PARSE_DETAIL = "There was an error parsing the body"
VALUE_ERROR_PREFIX = "Value error, "


def _json_failure_reason(cause: BaseException | None) -> str:
    """Describe why a request body could not be parsed as JSON, in client terms."""
    if isinstance(cause, json.JSONDecodeError):
        return f"{cause.msg} at position {cause.pos}"
    if isinstance(cause, RecursionError):
        return "the JSON is nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not valid UTF-8 (byte {cause.start})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        # Python's own message suggests sys.set_int_max_str_digits, which
        # means nothing to a client.
        return "a number is too large: integers may have at most 4300 digits"
    return "the body could not be parsed"


def _invalid_json_problem(reason: str) -> ValidationProblem:
    return ValidationProblem(INVALID_JSON_DETAIL, [FieldError(None, "body", reason)])


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        if location and location[0] == "body":
            location = location[1:]
        message = error["msg"]
        # pydantic prefixes the message of a ValueError raised in a validator.
        if message.startswith(VALUE_ERROR_PREFIX):
            message = message[len(VALUE_ERROR_PREFIX) :]
        errors.append(FieldError(None, ".".join(location) or "body", message))
    return errors


def _register_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def handle_problem(request: Request, exc: Problem) -> JSONResponse:
        return JSONResponse(
            exc.to_body(request.url.path),
            status_code=exc.status,
            media_type=PROBLEM_MEDIA_TYPE,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def handle_validation(
        request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        json_errors = [
            error for error in exc.errors() if error.get("type") == "json_invalid"
        ]
        if json_errors:
            cause = exc.__cause__
            if not isinstance(cause, json.JSONDecodeError):
                context = json_errors[0].get("ctx") or {}
                reason = str(context.get("error", "the body could not be parsed"))
            else:
                reason = _json_failure_reason(cause)
            return await handle_problem(request, _invalid_json_problem(reason))
        errors = _validation_errors(exc)
        problem = ValidationProblem(
            f"{len(errors)} invalid value(s) in the request", errors
        )
        return await handle_problem(request, problem)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http(
        request: Request, exc: StarletteHTTPException
    ) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_DETAIL:
            reason = _json_failure_reason(exc.__cause__)
            return await handle_problem(request, _invalid_json_problem(reason))
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        title, slug = _status_problem(exc.status_code)
        return problem_response(
            exc.status_code,
            title,
            detail,
            request.url.path,
            slug=slug,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception(
            "request.failed method=%s path=%s", request.method, request.url.path
        )
        return problem_response(
            500,
            "Internal server error",
            "the server failed to handle the request; see the server log",
            request.url.path,
            slug="internal-error",
        )


BEARER_SCHEME = "bearerAuth"
PROBLEM_SCHEMA_REF = {"$ref": "#/components/schemas/ProblemDetails"}
INPUT_PROBLEM_DESCRIPTION = (
    "The request content is invalid; `errors` lists every bad value."
)
# Descriptions of path parameters declared by routers without one.
PATH_PARAMETER_DESCRIPTIONS = {
    "study_id": "Study id: the UUID returned by `POST /v1/studies`.",
    "fit_id": "Fit id: the UUID returned by `POST /v1/studies/{study_id}/fits`.",
    "key_id": "Key id: the UUID returned by `POST /v1/keys`.",
}
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _document_errors(operation: dict[str, Any]) -> None:
    """Make every error response of an operation a ProblemDetails body.

    FastAPI documents a ``responses=`` model under ``application/json`` and
    its own 422 as ``HTTPValidationError``; the service sends neither. Every
    operation that takes parameters or a body also gets its 422.
    """
    responses = operation.setdefault("responses", {})
    if operation.get("parameters") or operation.get("requestBody"):
        responses.setdefault("422", {"description": INPUT_PROBLEM_DESCRIPTION})
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400:
            continue
        if status == "422" and response.get("description") == "Validation Error":
            response["description"] = INPUT_PROBLEM_DESCRIPTION
        response["content"] = {
            "application/problem+json": {"schema": PROBLEM_SCHEMA_REF}
        }


def _document_parameters(
    path: str, method: str, operation: dict[str, Any], settings: Settings
) -> None:
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if parameter["in"] == "path" and not parameter.get("description"):
            parameter["description"] = PATH_PARAMETER_DESCRIPTIONS.get(name, "")
        if (
            path == "/v1/studies/{study_id}/comparisons"
            and method == "get"
            and name == "limit"
        ):
            # The export limits are settings, so the text is built here.
            parameter["description"] = (
                f"Comparisons per page: {settings.export_default_limit} when "
                f"omitted, at most {settings.export_max_limit} (larger values are "
                "reduced to it; `PREFBUDGET_EXPORT_DEFAULT_LIMIT` and "
                "`PREFBUDGET_EXPORT_MAX_LIMIT` set both)."
            )


def _finish_openapi(schema: dict[str, Any], settings: Settings) -> None:
    """Add the bearer scheme and fix error content types and parameter texts."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "An API key issued by `POST /v1/keys`, or the bootstrap key set in "
            "`PREFBUDGET_ADMIN_KEY`."
        ),
    }
    for path, item in schema.get("paths", {}).items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            # Exactly the routers included with API_DEPENDENCIES document the
            # 401 of AUTH_RESPONSES, so a 401 marks an operation that needs a key.
            if "401" in operation.get("responses", {}):
                operation["security"] = [{BEARER_SCHEME: []}]
            _document_errors(operation)
            _document_parameters(path, method, operation, settings)

    # FastAPI's validation-error schemas are no longer referenced.
    text = json.dumps(schema["paths"])
    for name in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}" not in text:
            components.get("schemas", {}).pop(name, None)
    schema["info"]["x-package-version"] = __version__


def _install_openapi(app: FastAPI, settings: Settings) -> None:
    """Build the OpenAPI document: raw-body schemas, security and problem types."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        batch_schema = batch_adapter.json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(batch_schema.pop("$defs", {}))
        components["ComparisonBatch"] = batch_schema
        _finish_openapi(schema, settings)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Create the FastAPI application with its own engine and session factory.

    The database schema is not created here: run the migrations first
    (``prefbudget db upgrade``; ``prefbudget serve`` does it at start).
    """
    settings = settings or Settings()
    check_auth_configuration(auth_settings(settings), settings.host)
    engine = create_db_engine(
        settings.database_url,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.db_pool_size,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("app.started database=%s", engine.url.get_backend_name())
        app.state.fit_runner = start_in_process_runner(
            app.state.session_factory, settings
        )
        try:
            yield
        finally:
            if app.state.fit_runner is not None:
                app.state.fit_runner.stop()
            engine.dispose()
            logger.info("app.stopped")

    app = FastAPI(
        title="prefbudget API",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = create_session_factory(engine)

    _register_error_handlers(app)
    app.add_middleware(StudyLogContextMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_import_bytes=settings.max_import_bytes,
    )
    app.include_router(health.router)
    for module in (studies, comparisons, quotas, fits, model, policy, keys):
        app.include_router(
            module.router, dependencies=API_DEPENDENCIES, responses=AUTH_RESPONSES
        )
    install_docs(app)
    _install_openapi(app, settings)
    metrics.install(app)
    return app
