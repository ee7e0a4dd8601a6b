"""Application factory: routers, middleware and problem-details error handlers."""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__, metrics
from app.api import comparisons, health, studies
from app.auth.config import auth_settings
from app.auth.dependencies import (
    API_DEPENDENCIES,
    AUTH_RESPONSES,
    check_auth_configuration,
)
from app.db.engine import create_db_engine, create_session_factory
from app.jobs.runner import start_in_process_runner
from app.logs import log_context
from app.problems import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_PREFIX,
    FieldError,
    Problem,
    ValidationProblem,
)
from app.schemas.comparisons import batch_adapter
from app.settings import Settings

logger = logging.getLogger(__name__)

DESCRIPTION = """\
prefbudget decides how to spend a budget of pairwise-preference labels across
a target task and related source tasks, learns a shared low-rank reward model,
and picks responses with a pessimistic (lower-confidence-bound) policy.

Create a study, post comparisons as they are labeled, ask the quotas which
tasks to label next, and ask the policy which response to pick. Every error
is an RFC 9457 problem-details body (`application/problem+json`); validation
errors list every bad value in `errors` with its row `index`, `field` and
`reason`.
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
OPTIONAL_ROUTERS = (
    "app.api.fits",
    "app.api.quotas",
    "app.api.model",
    "app.api.policy",
    "app.api.keys",
)

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
    """Build an ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + slug if slug else "about:blank",
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


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        if location and location[0] == "body":
            location = location[1:]
        errors.append(FieldError(None, ".".join(location) or "body", error["msg"]))
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
        errors = _validation_errors(exc)
        problem = ValidationProblem(
            f"{len(errors)} invalid value(s) in the request", errors
        )
        return await handle_problem(request, problem)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http(
        request: Request, exc: StarletteHTTPException
    ) -> JSONResponse:
        titles = {
            404: "Not found",
            405: "Method not allowed",
            413: "Content too large",
        }
        slugs = {413: "content-too-large", 404: "not-found"}
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem_response(
            exc.status_code,
            titles.get(exc.status_code, "HTTP error"),
            detail,
            request.url.path,
            slug=slugs.get(exc.status_code),
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


def _include_optional_routers(app: FastAPI) -> None:
    for module_name in OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            logger.debug("app.router_skipped module=%s", module_name)
            continue
        app.include_router(
            module.router, dependencies=API_DEPENDENCIES, responses=AUTH_RESPONSES
        )


def _install_openapi(app: FastAPI) -> None:
    """Add the raw-body request schemas to the generated OpenAPI document."""

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
        title="prefbudget",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
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
    app.include_router(
        studies.router, dependencies=API_DEPENDENCIES, responses=AUTH_RESPONSES
    )
    app.include_router(
        comparisons.router, dependencies=API_DEPENDENCIES, responses=AUTH_RESPONSES
    )
    _include_optional_routers(app)
    _install_openapi(app)
    metrics.install(app)
    return app
