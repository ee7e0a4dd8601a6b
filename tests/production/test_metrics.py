"""GET /metrics: Prometheus text with requests, labels, fits and the queue depth."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.db.models import Study
from app.jobs.config import FitQueueSettings
from app.jobs.runner import run_pending
from app.metrics import REGISTRY
from app.services import fits as fit_service

QUEUE = FitQueueSettings(
    run_fits_in_process=False,
    fit_poll_seconds=0.05,
    fit_heartbeat_seconds=0.05,
    fit_stale_seconds=30.0,
    fit_max_attempts=1,
)


@pytest.fixture
def client(app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client whose app runs no fits by itself, so the queue stays as left."""
    monkeypatch.setenv("PREFBUDGET_RUN_FITS_IN_PROCESS", "false")
    with TestClient(app) as test_client:
        yield test_client


def queue_fit_directly(client: TestClient, study_id: str) -> str:
    """Queue a manual fit through the service, bypassing the endpoint's checks.

    The endpoint allows one pending fit per study and none without labels.
    """
    with client.app.state.session_factory() as session:
        study = session.get(Study, study_id)
        fit_id = fit_service.queue_fit(session, study, trigger="manual").id
        session.commit()
    return fit_id


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def current(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_requests_are_counted_by_route_template(client, make_study) -> None:
    study = make_study(client)
    route = "/v1/studies/{study_id}"
    before = current(
        "prefbudget_http_requests_total", method="GET", route=route, status="200"
    )
    missing_before = current(
        "prefbudget_http_requests_total", method="GET", route=route, status="404"
    )

    client.get(f"/v1/studies/{study['id']}")
    client.get(f"/v1/studies/{study['id']}")
    client.get("/v1/studies/not-a-study")
    samples = scrape(client)

    total = "prefbudget_http_requests_total"
    assert value(samples, total, method="GET", route=route, status="200") == before + 2
    assert (
        value(samples, total, method="GET", route=route, status="404")
        == missing_before + 1
    )
    # Request paths with ids never become label values.
    assert not any(study["id"] in str(key) for key in samples)


def test_unmatched_paths_share_one_series(client) -> None:
    before = current(
        "prefbudget_http_requests_total",
        method="GET",
        route="<unmatched>",
        status="404",
    )
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")

    samples = scrape(client)

    assert (
        value(
            samples,
            "prefbudget_http_requests_total",
            method="GET",
            route="<unmatched>",
            status="404",
        )
        == before + 2
    )


def test_labels_ingested_counts_inserted_and_duplicates(client, make_study) -> None:
    study = make_study(client)
    inserted_before = current("prefbudget_labels_ingested_total", result="inserted")
    duplicate_before = current("prefbudget_labels_ingested_total", result="duplicate")
    batch = {
        "comparisons": [
            {"id": f"m-{n}", "task": "a", "features": [n, 0, 0, 1], "label": 1}
            for n in range(3)
        ]
    }

    assert client.post(f"/v1/studies/{study['id']}/comparisons", json=batch).json() == {
        "inserted": 3,
        "duplicates": 0,
    }
    client.post(f"/v1/studies/{study['id']}/comparisons", json=batch)
    bad = {"comparisons": [{"task": "zzz", "features": [0, 0, 0, 0], "label": 1}]}
    assert (
        client.post(f"/v1/studies/{study['id']}/comparisons", json=bad).status_code
        == 422
    )
    samples = scrape(client)

    name = "prefbudget_labels_ingested_total"
    assert value(samples, name, result="inserted") == inserted_before + 3
    assert value(samples, name, result="duplicate") == duplicate_before + 3


def test_queue_depth_is_read_at_scrape_time(client, make_study) -> None:
    study = make_study(client)
    queue_fit_directly(client, study["id"])
    queue_fit_directly(client, study["id"])
    factory = client.app.state.session_factory

    queued = value(scrape(client), "prefbudget_fit_queue_depth", status="queued")
    assert queued >= 2

    run_pending(factory, QUEUE, "metrics-test")

    samples = scrape(client)
    assert value(samples, "prefbudget_fit_queue_depth", status="queued") == 0
    assert value(samples, "prefbudget_fit_queue_depth", status="running") == 0


def test_failed_fits_are_counted_with_duration(client, make_study) -> None:
    # A study with no labels at all fails its fit with a solver error.
    study = make_study(client)
    failures_before = current("prefbudget_fit_failures_total")
    count_before = current("prefbudget_fit_duration_seconds_count", outcome="failed")
    fit_id = queue_fit_directly(client, study["id"])

    run_pending(client.app.state.session_factory, QUEUE, "metrics-test")

    status = client.get(f"/v1/studies/{study['id']}/fits/{fit_id}").json()
    assert status["status"] == "failed"
    samples = scrape(client)
    assert value(samples, "prefbudget_fit_failures_total") == failures_before + 1
    assert (
        value(samples, "prefbudget_fit_duration_seconds_count", outcome="failed")
        == count_before + 1
    )


def test_metrics_expose_help_and_types(client) -> None:
    families = {
        family.name: family
        for family in text_string_to_metric_families(client.get("/metrics").text)
    }

    for name, kind in [
        ("prefbudget_http_requests", "counter"),
        ("prefbudget_http_request_duration_seconds", "histogram"),
        ("prefbudget_labels_ingested", "counter"),
        ("prefbudget_fit_duration_seconds", "histogram"),
        ("prefbudget_fit_failures", "counter"),
        ("prefbudget_fit_queue_depth", "gauge"),
    ]:
        assert name in families, name
        assert families[name].type == kind, name
        assert families[name].documentation, name
