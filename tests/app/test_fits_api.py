"""Fit jobs over HTTP: queueing, running, phase moves, failures and the queue protocol.

Fits here run when a test calls :func:`run_fits`, not in a background thread,
so every step is deterministic. The in-process runner is covered by the
campaign tests.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from app.db.models import Fit, Study, utcnow
from app.jobs.config import FitQueueSettings
from app.jobs.isolation import ChildConfig, ChildFitError, FitProcess
from app.jobs.queue import claim_next, heartbeat, requeue_stale
from app.jobs.runner import run_claimed_fit, run_pending
from app.services import fits as fit_service
from app.services.policy import MODEL_CACHE

QUEUE = FitQueueSettings(
    run_fits_in_process=False,
    fit_poll_seconds=0.05,
    fit_heartbeat_seconds=0.05,
    fit_stale_seconds=30.0,
    fit_max_attempts=2,
)

# Planted rank-2 parameters for d = 4: t = 1.0 * a + 0.5 * b, c unrelated.
THETAS = {
    "a": np.array([1.5, -1.0, 0.0, 0.0]),
    "b": np.array([0.0, 1.0, 1.0, 0.0]),
    "c": np.array([1.0, 0.0, 2.0, 0.0]),
}
THETAS["t"] = THETAS["a"] + 0.5 * THETAS["b"]


@pytest.fixture
def client(app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A test client whose app does not run fits by itself."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("PREFBUDGET_RUN_FITS_IN_PROCESS", "false")
    with TestClient(app) as test_client:
        assert test_client.app.state.fit_runner is None
        yield test_client


def run_fits(client: Any, worker_id: str = "test-worker") -> int:
    """Run every queued fit in this thread; return how many ran."""
    return run_pending(client.app.state.session_factory, QUEUE, worker_id)


def post_labels(
    client: Any, study_id: str, counts: dict[str, int], seed: int = 0
) -> dict[str, Any]:
    """Post ``counts[task]`` planted comparisons per task in one batch."""
    rng = np.random.default_rng(seed)
    rows = []
    for task, n in counts.items():
        X = rng.standard_normal((n, 4))
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-X @ THETAS[task]))).astype(float)
        rows += [
            {"task": task, "features": x.tolist(), "label": float(label)}
            for x, label in zip(X, y, strict=True)
        ]
    response = client.post(
        f"/v1/studies/{study_id}/comparisons", json={"comparisons": rows}
    )
    assert response.status_code == 200, response.text
    return response.json()


def fill_quotas(client: Any, study_id: str, seed: int = 0) -> dict[str, Any]:
    """Post exactly the remaining labels of the current phase."""
    quotas = client.get(f"/v1/studies/{study_id}/quotas").json()
    counts = {task["task"]: task["remaining"] for task in quotas["tasks"]}
    return post_labels(client, study_id, {k: v for k, v in counts.items() if v}, seed)


def queue_fit_directly(client: Any, study_id: str) -> str:
    """Queue a manual fit through the service, bypassing the endpoint's checks."""
    with client.app.state.session_factory() as session:
        study = session.get(Study, study_id)
        fit_id = fit_service.queue_fit(session, study, trigger="manual").id
        session.commit()
    return fit_id


def list_fits(client: Any, study_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/studies/{study_id}/fits")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_manual_fit_is_queued_with_202(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 1, "b": 1, "c": 1, "t": 1})

    response = client.post(f"/v1/studies/{study['id']}/fits")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["phase"] == "pilot"
    assert body["trigger"] == "manual"
    assert body["attempts"] == 0
    assert body["labels"] == {}
    fetched = client.get(f"/v1/studies/{study['id']}/fits/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["id"] == body["id"]


def test_unknown_fit_and_study_are_404(client, make_study):
    study = make_study(client)

    missing_fit = client.get(f"/v1/studies/{study['id']}/fits/no-such-fit")
    missing_study = client.post("/v1/studies/no-such-study/fits")

    assert missing_fit.status_code == 404
    assert missing_fit.headers["content-type"].startswith("application/problem+json")
    assert missing_study.status_code == 404
    assert client.get("/v1/studies/no-such-study/fits").status_code == 404
    assert client.get("/v1/studies/no-such-study/model").status_code == 404


def test_model_is_404_before_any_fit(client, make_study):
    study = make_study(client)

    response = client.get(f"/v1/studies/{study['id']}/model")

    assert response.status_code == 404
    assert response.json()["type"].endswith("no-model")


def test_pilot_quotas_met_queue_one_auto_fit(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 2, "b": 2, "c": 2, "t": 2})
    assert list_fits(client, study["id"]) == []

    fill_quotas(client, study["id"])
    post_labels(client, study["id"], {"a": 3}, seed=1)

    fits = list_fits(client, study["id"])
    assert len(fits) == 1
    assert fits[0]["trigger"] == "auto"
    assert fits[0]["phase"] == "pilot"
    assert fits[0]["status"] == "queued"


def test_auto_fit_moves_study_through_phases(client, make_study):
    study = make_study(client)
    study_id = study["id"]

    fill_quotas(client, study_id)
    assert run_fits(client) >= 1
    pilot = list_fits(client, study_id)[0]
    assert pilot["status"] == "succeeded", pilot["error"]
    assert client.get(f"/v1/studies/{study_id}").json()["phase"] == "main"
    assert set(pilot["relevance"]) == {"a", "b", "c"}
    assert pilot["labels"] == {"a": 4, "b": 4, "c": 4, "t": 6}
    assert pilot["diagnostics"]["completes_phase"] is True

    quotas = client.get(f"/v1/studies/{study_id}/quotas").json()
    assert quotas["phase"] == "main"
    assert quotas["fit_id"] == pilot["id"]
    assert all(task["collected"] == 0 for task in quotas["tasks"])

    fill_quotas(client, study_id, seed=2)
    run_fits(client)
    main = list_fits(client, study_id)[0]
    assert main["status"] == "succeeded", main["error"]
    assert main["phase"] == "main"
    assert client.get(f"/v1/studies/{study_id}").json()["phase"] == "complete"
    # By default the final fit also uses the pilot labels.
    assert sum(main["labels"].values()) == 18 + 40
    assert main["diagnostics"]["phases_used"] == ["pilot", "main", "complete"]

    model = client.get(f"/v1/studies/{study_id}/model").json()
    assert model["fit_id"] == main["id"]
    assert len(model["theta"]) == 4
    assert len(model["basis"]) == main["rank"]
    assert all(len(vector) == 4 for vector in model["basis"])
    assert model["confidence_radius"] > 0
    assert set(model["source_thetas"]) == {"a", "b", "c"}
    basis = np.array(model["basis"])
    np.testing.assert_allclose(basis @ basis.T, np.eye(len(basis)), atol=1e-8)


def test_strict_phase_split_leaves_pilot_labels_out(client, make_study):
    study = make_study(client, settings={"strict_phase_split": True})
    fill_quotas(client, study["id"])
    run_fits(client)
    fill_quotas(client, study["id"], seed=3)

    run_fits(client)

    main = list_fits(client, study["id"])[0]
    assert main["status"] == "succeeded", main["error"]
    assert sum(main["labels"].values()) == 40
    assert main["diagnostics"]["phases_used"] == ["main", "complete"]


def test_known_relevance_study_completes_after_one_fit(client, make_study):
    study = make_study(
        client,
        relevance={"a": 1.0, "b": 0.5, "c": 0.0},
        budget={"source": 60},
    )
    quotas = client.get(f"/v1/studies/{study['id']}/quotas").json()
    assert quotas["phase"] == "main"
    planned = {task["task"]: task["planned"] for task in quotas["tasks"]}
    assert planned == {"a": 30, "b": 20, "c": 10, "t": 0}

    fill_quotas(client, study["id"])
    run_fits(client)

    fit = list_fits(client, study["id"])[0]
    assert fit["status"] == "succeeded", fit["error"]
    assert fit["relevance"] == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert client.get(f"/v1/studies/{study['id']}").json()["phase"] == "complete"
    model = client.get(f"/v1/studies/{study['id']}/model").json()
    thetas = model["source_thetas"]
    expected = np.array(thetas["a"]) + 0.5 * np.array(thetas["b"])
    np.testing.assert_allclose(model["theta"], expected, atol=1e-12)


def test_failed_fit_keeps_last_good_model(client, make_study):
    study = make_study(client)
    study_id = study["id"]
    fill_quotas(client, study_id)
    run_fits(client)
    good = client.get(f"/v1/studies/{study_id}/model").json()

    # A rank candidate above min(d, M) is a solver error: the fit fails at once.
    response = client.post(f"/v1/studies/{study_id}/fits")
    fit_id = response.json()["id"]
    factory = client.app.state.session_factory
    with factory() as session:
        session.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(rank=None, settings={"rank_candidates": [9]})
        )
        session.commit()
    run_fits(client)

    failed = client.get(f"/v1/studies/{study_id}/fits/{fit_id}").json()
    assert failed["status"] == "failed"
    assert failed["attempts"] == 1
    assert "rank candidates" in failed["error"]
    model = client.get(f"/v1/studies/{study_id}/model").json()
    assert model["fit_id"] == good["fit_id"]
    assert model["theta"] == good["theta"]
    assert client.get(f"/v1/studies/{study_id}").json()["phase"] == "main"


def test_fit_without_labels_fails_naming_the_task(client, make_study):
    # The endpoint rejects such a fit; one queued before the labels were
    # deleted, or by an older version, still fails cleanly in the worker.
    study = make_study(client)
    fit_id = queue_fit_directly(client, study["id"])

    run_fits(client)

    fit = client.get(f"/v1/studies/{study['id']}/fits/{fit_id}").json()
    assert fit["status"] == "failed"
    assert "has no labels" in fit["error"]
    assert fit["finished_at"] is not None


def test_manual_fit_after_failed_auto_fit_moves_phase(client, make_study):
    study = make_study(client)
    study_id = study["id"]
    fill_quotas(client, study_id)
    factory = client.app.state.session_factory
    with factory() as session:
        session.execute(
            update(Fit)
            .where(Fit.study_id == study_id)
            .values(status="failed", error="simulated failure", finished_at=utcnow())
        )
        session.commit()

    client.post(f"/v1/studies/{study_id}/fits")
    run_fits(client)

    assert client.get(f"/v1/studies/{study_id}").json()["phase"] == "main"


def test_restart_resumes_queued_and_stale_fits(client, make_study, settings):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 1, "b": 1, "c": 1, "t": 1})
    queued_id = client.post(f"/v1/studies/{study['id']}/fits").json()["id"]
    fill_quotas(client, study["id"])
    factory = client.app.state.session_factory
    # The auto fit was claimed by a worker that died before the restart.
    with factory() as session:
        session.execute(
            update(Fit)
            .where(Fit.study_id == study["id"], Fit.trigger == "auto")
            .values(
                status="running",
                worker_id="dead-worker",
                attempts=1,
                heartbeat_at=utcnow() - timedelta(minutes=5),
            )
        )
        session.commit()
    client.close()

    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as restarted:
        assert restarted.app.state.fit_runner is None
        run_fits(restarted)
        fits = list_fits(restarted, study["id"])
        phase = restarted.get(f"/v1/studies/{study['id']}").json()["phase"]

    by_id = {fit["id"]: fit for fit in fits}
    assert by_id[queued_id]["status"] == "succeeded", by_id[queued_id]["error"]
    auto = next(fit for fit in fits if fit["trigger"] == "auto")
    assert auto["status"] == "succeeded", auto["error"]
    assert auto["attempts"] == 2
    assert phase == "main"


def test_fit_process_computes_and_reports_errors(client, make_study, database_url):
    study = make_study(client)
    empty_id = queue_fit_directly(client, study["id"])
    fill_quotas(client, study["id"])
    auto_id = next(
        fit["id"] for fit in list_fits(client, study["id"]) if fit["trigger"] == "auto"
    )
    process = FitProcess(ChildConfig(database_url, 30_000, nice=5))
    try:
        computation = process.compute(auto_id)
        # The manual fit was queued before any label, but it loads the labels
        # stored now, so it succeeds as well; an unknown id fails retryably.
        second = process.compute(empty_id)
        with pytest.raises(ChildFitError) as failure:
            process.compute("no-such-fit")
    finally:
        process.stop()

    assert computation.phase == "pilot"
    assert computation.completes_phase is True
    assert computation.labels == {"a": 4, "b": 4, "c": 4, "t": 6}
    assert computation.outcome.theta.shape == (4,)
    assert second.labels == computation.labels
    assert failure.value.retryable is True
    assert "no-such-fit" in str(failure.value)


def test_fit_process_solver_error_is_final(client, make_study, database_url):
    study = make_study(client)
    fit_id = queue_fit_directly(client, study["id"])
    process = FitProcess(ChildConfig(database_url, 30_000, nice=0))
    try:
        with pytest.raises(ChildFitError) as failure:
            process.compute(fit_id)
    finally:
        process.stop()

    assert failure.value.retryable is False
    assert "InsufficientDataError" in str(failure.value)
    assert "has no labels" in str(failure.value)


def test_stale_running_fit_is_requeued_then_abandoned(client, make_study):
    # Earlier tests share the database; run their fits so that this study's
    # fit is the only queued one.
    run_fits(client)
    study = make_study(client)
    fill_quotas(client, study["id"])
    factory = client.app.state.session_factory
    claim = claim_next(factory, "dead-worker")
    assert claim is not None

    # A fresh heartbeat keeps the fit; an old one sends it back to the queue.
    assert requeue_stale(factory, stale_seconds=30, max_attempts=2) == []
    _age_heartbeat(factory, claim.fit_id)
    assert requeue_stale(factory, stale_seconds=30, max_attempts=2) == [claim.fit_id]
    fit = client.get(f"/v1/studies/{study['id']}/fits/{claim.fit_id}").json()
    assert fit["status"] == "queued"
    assert "dead-worker" in fit["error"]
    # The dead worker's late heartbeat and result are refused.
    assert heartbeat(factory, claim) is False
    assert run_claimed_fit(factory, claim, QUEUE) is None

    second = claim_next(factory, "second-dead-worker")
    assert second is not None
    assert second.attempt == 2
    _age_heartbeat(factory, second.fit_id)
    requeue_stale(factory, stale_seconds=30, max_attempts=2)
    fit = client.get(f"/v1/studies/{study['id']}/fits/{second.fit_id}").json()
    assert fit["status"] == "failed"
    assert "gave up after 2 attempt(s)" in fit["error"]


def _age_heartbeat(factory: Any, fit_id: str) -> None:
    with factory() as session:
        session.execute(
            update(Fit)
            .where(Fit.id == fit_id)
            .values(heartbeat_at=utcnow() - timedelta(minutes=5))
        )
        session.commit()


def test_concurrent_claimers_get_distinct_fits(client, make_study):
    study = make_study(client)
    for _ in range(6):
        queue_fit_directly(client, study["id"])
    factory = client.app.state.session_factory
    claims: list[str] = []
    lock = threading.Lock()

    def claim_all(worker: str) -> None:
        while (claim := claim_next(factory, worker)) is not None:
            with lock:
                claims.append(claim.fit_id)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with factory() as session:
        queued_here = session.scalars(
            select(Fit.id).where(Fit.study_id == study["id"])
        ).all()
    assert len(claims) == len(set(claims))
    assert set(queued_here) <= set(claims)


def test_ingest_is_not_blocked_while_a_fit_computes(client, make_study, monkeypatch):
    study = make_study(client)
    fill_quotas(client, study["id"])
    started = threading.Event()
    release = threading.Event()
    real_compute = fit_service.compute_fit

    def slow_compute(inputs):
        started.set()
        assert release.wait(30)
        return real_compute(inputs)

    monkeypatch.setattr("app.jobs.runner.compute_fit", slow_compute)
    worker = threading.Thread(target=run_fits, args=(client,))
    worker.start()
    try:
        assert started.wait(30)
        answer = post_labels(client, study["id"], {"a": 5}, seed=9)
        quotas = client.get(f"/v1/studies/{study['id']}/quotas")
    finally:
        release.set()
        worker.join()
    assert answer["inserted"] == 5
    assert quotas.status_code == 200


def test_model_cache_serves_same_arrays(client, make_study):
    study = make_study(client)
    fill_quotas(client, study["id"])
    run_fits(client)
    MODEL_CACHE.clear()

    first = client.get(f"/v1/studies/{study['id']}/model").json()
    second = client.get(f"/v1/studies/{study['id']}/model").json()

    assert first == second
