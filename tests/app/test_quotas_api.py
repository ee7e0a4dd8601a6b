"""Quota endpoint: Active-Sample plans per phase, collected counts and batch splits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from app.db.models import Fit
from app.jobs.config import FitQueueSettings
from app.jobs.runner import run_pending
from solvers.allocation import active_sample


@pytest.fixture
def client(app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A test client whose app does not run fits by itself."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("PREFBUDGET_RUN_FITS_IN_PROCESS", "false")
    with TestClient(app) as test_client:
        yield test_client


def post_random(client: Any, study_id: str, counts: dict[str, int]) -> None:
    rng = np.random.default_rng(sum(counts.values()))
    rows = [
        {
            "task": task,
            "features": rng.standard_normal(4).tolist(),
            "label": float(rng.integers(0, 2)),
        }
        for task, n in counts.items()
        for _ in range(n)
    ]
    response = client.post(
        f"/v1/studies/{study_id}/comparisons", json={"comparisons": rows}
    )
    assert response.status_code == 200, response.text


def quotas(client: Any, study_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/studies/{study_id}/quotas", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def by_task(body: dict[str, Any], field: str) -> dict[str, int]:
    return {task["task"]: task[field] for task in body["tasks"]}


def test_pilot_quotas_split_uniformly_without_prior(client, make_study):
    study = make_study(client)

    body = quotas(client, study["id"])

    assert body["phase"] == "pilot"
    assert body["fit_id"] is None
    assert body["next_batch"] is None
    assert body["quotas_met"] is False
    assert [task["task"] for task in body["tasks"]] == ["a", "b", "c", "t"]
    assert [task["role"] for task in body["tasks"]] == ["source"] * 3 + ["target"]
    assert by_task(body, "planned") == {"a": 4, "b": 4, "c": 4, "t": 6}
    assert by_task(body, "collected") == {"a": 0, "b": 0, "c": 0, "t": 0}
    assert by_task(body, "remaining") == by_task(body, "planned")


def test_pilot_quotas_follow_the_prior(client, make_study):
    study = make_study(
        client,
        prior={"a": 3.0, "b": 1.0, "c": 0.0},
        budget={"source": 30, "target": 10, "pilot_source": 120, "pilot_target": 6},
    )

    body = quotas(client, study["id"])

    expected = active_sample(120, [3.0, 1.0, 0.0])
    planned = by_task(body, "planned")
    assert [planned[name] for name in "abc"] == expected.tolist()
    assert planned == {"a": 65, "b": 35, "c": 20, "t": 6}


def test_collected_counts_only_the_current_phase(client, make_study):
    study = make_study(client)
    post_random(client, study["id"], {"a": 3, "t": 10})

    body = quotas(client, study["id"])

    assert by_task(body, "collected") == {"a": 3, "b": 0, "c": 0, "t": 10}
    assert by_task(body, "remaining") == {"a": 1, "b": 4, "c": 4, "t": 0}


def test_next_batch_splits_by_remaining_need(client, make_study):
    study = make_study(client)
    post_random(client, study["id"], {"a": 4})

    body = quotas(client, study["id"], batch=7)

    assert sum(body["next_batch"].values()) == 7
    assert body["next_batch"]["a"] == 0
    remaining = by_task(body, "remaining")
    assert all(body["next_batch"][task] <= remaining[task] for task in remaining)
    everything = quotas(client, study["id"], batch=1000)
    assert everything["next_batch"] == remaining


def test_batch_must_be_non_negative(client, make_study):
    study = make_study(client)

    response = client.get(f"/v1/studies/{study['id']}/quotas", params={"batch": -1})

    assert response.status_code == 422
    assert quotas(client, study["id"], batch=0)["next_batch"] == {
        "a": 0,
        "b": 0,
        "c": 0,
        "t": 0,
    }


def test_unknown_study_is_404(client):
    response = client.get("/v1/studies/no-such-study/quotas")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_main_quotas_use_pilot_relevance_and_fresh_labels(client, make_study):
    study = make_study(
        client,
        budget={"source": 100, "target": 10, "pilot_source": 12, "pilot_target": 6},
    )
    post_random(client, study["id"], {"a": 4, "b": 4, "c": 4, "t": 6})
    run_pending(
        client.app.state.session_factory,
        FitQueueSettings(run_fits_in_process=False),
        "test-worker",
    )
    factory = client.app.state.session_factory
    relevance = {"a": 2.0, "b": 0.0, "c": -1.0}
    with factory() as session:
        # Replace the estimate so that the expected plan is known exactly.
        session.execute(
            update(Fit).where(Fit.study_id == study["id"]).values(relevance=relevance)
        )
        session.commit()

    body = quotas(client, study["id"])

    assert body["phase"] == "main"
    assert body["fit_id"] is not None
    planned = by_task(body, "planned")
    assert [planned[name] for name in "abc"] == active_sample(100, [2, 0, -1]).tolist()
    assert planned["t"] == 10
    assert by_task(body, "collected") == {"a": 0, "b": 0, "c": 0, "t": 0}


def test_known_relevance_plans_no_target_labels(client, make_study):
    study = make_study(
        client,
        relevance={"a": 0.0, "b": 0.0, "c": 0.0},
        budget={"source": 31},
    )

    body = quotas(client, study["id"])

    assert body["phase"] == "main"
    planned = by_task(body, "planned")
    assert sum(planned[name] for name in "abc") == 31
    assert planned["t"] == 0


def test_quotas_met_flag_after_filling(client, make_study):
    study = make_study(client)
    post_random(client, study["id"], {"a": 4, "b": 4, "c": 4, "t": 6})

    body = quotas(client, study["id"])

    assert body["quotas_met"] is True
    assert all(task["remaining"] == 0 for task in body["tasks"])
