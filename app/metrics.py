"""Prometheus metrics: HTTP requests, labels ingested, fits and the fit queue.

Each process counts what happens in it. The API process exposes its metrics at
``GET /metrics``. Fits that a worker runs do not reach any API process, so a
``prefbudget worker`` exposes its own metrics on
``PREFBUDGET_WORKER_METRICS_PORT`` when that is set. The queue depth is read
from the database at scrape time, so every API replica reports the same
cluster-wide numbers.

The metrics live in a module-level :class:`~prometheus_client.CollectorRegistry`
rather than prometheus_client's global one, so that several apps built in one
process (tests do that) share one set of series without registration errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from sqlalchemy import event, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.db.models import Fit

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

# Route template of requests that matched no route, so that scanners probing
# random paths cannot create one series per path.
UNMATCHED_ROUTE = "<unmatched>"

HTTP_REQUESTS = Counter(
    "prefbudget_http_requests",
    "HTTP requests handled, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "prefbudget_http_request_duration_seconds",
    "Time from receiving a request to sending the end of its response.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
LABELS_INGESTED = Counter(
    "prefbudget_labels_ingested",
    "Comparisons received, by result: inserted, or duplicate of a stored one.",
    ["result"],
    registry=REGISTRY,
)
FIT_DURATION = Histogram(
    "prefbudget_fit_duration_seconds",
    "Wall time of fit attempts that ran in this process, by outcome.",
    ["outcome"],
    buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
    registry=REGISTRY,
)
FIT_FAILURES = Counter(
    "prefbudget_fit_failures",
    "Fit attempts that raised an error in this process.",
    registry=REGISTRY,
)
FIT_QUEUE_DEPTH = Gauge(
    "prefbudget_fit_queue_depth",
    "Fits in the database by status, read at scrape time (queued and running).",
    ["status"],
    registry=REGISTRY,
)


def record_labels(inserted: int, duplicates: int) -> None:
    """Count one ingest call's inserted and duplicate comparisons."""
    if inserted:
        LABELS_INGESTED.labels(result="inserted").inc(inserted)
    if duplicates:
        LABELS_INGESTED.labels(result="duplicate").inc(duplicates)


def record_labels_after_commit(
    session: Session, inserted: int, duplicates: int
) -> None:
    """Count an ingest call's comparisons once ``session`` commits them.

    A batch whose transaction rolls back is not counted.
    """

    def count(_session: Session) -> None:
        record_labels(inserted, duplicates)

    event.listen(session, "after_commit", count, once=True)


def record_fit(duration_seconds: float, *, succeeded: bool) -> None:
    """Record one finished fit attempt and, when it failed, count the failure."""
    outcome = "succeeded" if succeeded else "failed"
    FIT_DURATION.labels(outcome=outcome).observe(duration_seconds)
    if not succeeded:
        FIT_FAILURES.inc()


def update_queue_depth(session: Session) -> None:
    """Set the queue-depth gauge from one ``GROUP BY status`` query."""
    counts = dict(
        session.execute(
            select(Fit.status, func.count())
            .where(Fit.status.in_(("queued", "running")))
            .group_by(Fit.status)
        ).all()
    )
    for status in ("queued", "running"):
        FIT_QUEUE_DEPTH.labels(status=status).set(counts.get(status, 0))


def render_latest() -> tuple[bytes, str]:
    """Return the text exposition of every metric and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class RequestMetricsMiddleware:
    """ASGI middleware that counts requests by route template and status.

    The route template is read from ``scope["route"]`` after the app handled
    the request, because FastAPI's router stores the matched route there.
    A request that raised before any response was sent counts as status 500.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        status = 500
        started = time.perf_counter()

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(
                method=method, route=template, status=str(status)
            ).inc()
            HTTP_REQUEST_DURATION.labels(method=method, route=template).observe(
                time.perf_counter() - started
            )


def metrics_endpoint(request: Request) -> Response:
    """Render the metrics in the Prometheus text format (no API key needed)."""
    session = request.app.state.session_factory()
    try:
        update_queue_depth(session)
    except SQLAlchemyError as exc:
        # The request counters are still worth scraping when the database is
        # down; the gauge keeps its last value and readiness reports the outage.
        logger.warning("metrics.queue_depth_failed error=%s", exc.__class__.__name__)
    finally:
        session.close()
    body, content_type = render_latest()
    return Response(body, media_type=content_type)


def install(app: FastAPI) -> None:
    """Add the request-counting middleware and ``GET /metrics`` to ``app``.

    Call it after every other middleware was added, so that the counter also
    records the responses those middlewares send, 413 included.
    """
    app.add_middleware(RequestMetricsMiddleware)
    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        include_in_schema=False,
        response_class=Response,
    )


def start_worker_metrics_server(host: str, port: int) -> None:
    """Serve this process's metrics on ``host:port`` in a background thread."""
    start_http_server(port, addr=host, registry=REGISTRY)
    logger.info("metrics.server.started host=%s port=%d", host, port)


__all__ = [
    "REGISTRY",
    "RequestMetricsMiddleware",
    "record_fit",
    "record_labels",
    "record_labels_after_commit",
    "render_latest",
    "install",
    "metrics_endpoint",
    "start_worker_metrics_server",
    "update_queue_depth",
]
