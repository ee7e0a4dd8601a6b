"""An Algorithm 2 campaign on a planted instance, driven only over HTTP.

The client follows the quotas, posts labels drawn from the planted model, and
waits for the fits that the service queues and runs by itself (the in-process
runner of the app lifespan). The checks: the phases advance pilot -> main ->
complete, the estimated relevance singles out the tasks of the planted
smallest-l1 representation, the main-phase quotas favour those tasks, and the
pessimistic policy beats a random choice on held-out contexts.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from solvers.simulate import (
    make_contexts,
    make_planted_instance,
    min_l1_representation,
    suboptimality,
)

BATCH = 1000
FIT_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def client(app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A test client whose app runs fits in its own background thread."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("PREFBUDGET_RUN_FITS_IN_PROCESS", "true")
    monkeypatch.setenv("PREFBUDGET_FIT_POLL_SECONDS", "0.05")
    with TestClient(app) as test_client:
        assert test_client.app.state.fit_runner is not None
        yield test_client


@pytest.fixture(scope="module")
def instance() -> Any:
    # Seed 4 plants relevance on sources 2 and 5, and every representation
    # of the target that avoids one of them costs at least 46% more l1 norm.
    return make_planted_instance(8, 3, 6, n_relevant=2, seed=4)


def wait_for_phase_change(client: Any, study_id: str, phase: str) -> dict[str, Any]:
    """Poll the study until it leaves ``phase``; fail on a failed fit or timeout."""
    deadline = time.monotonic() + FIT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        study = client.get(f"/v1/studies/{study_id}").json()
        if study["phase"] != phase:
            return study
        latest = study["latest_fit"]
        if latest is not None and latest["status"] == "failed":
            fit = client.get(f"/v1/studies/{study_id}/fits/{latest['id']}").json()
            pytest.fail(f"fit {latest['id']} failed: {fit['error']}")
        time.sleep(0.05)
    pytest.fail(f"study {study_id} stayed in phase {phase}")


def run_campaign(client: Any, instance: Any, study_id: str) -> list[str]:
    """Follow the quotas until the study completes; return the phases seen."""
    rng = np.random.default_rng(2024)
    phases: list[str] = []
    for _ in range(50):
        quotas = client.get(f"/v1/studies/{study_id}/quotas", params={"batch": BATCH})
        assert quotas.status_code == 200, quotas.text
        body = quotas.json()
        if not phases or phases[-1] != body["phase"]:
            phases.append(body["phase"])
        if body["phase"] == "complete":
            return phases
        if body["quotas_met"]:
            wait_for_phase_change(client, study_id, body["phase"])
            continue

        rows = []
        for task, count in body["next_batch"].items():
            if count == 0:
                continue
            data = instance.sample(task, count, rng)
            rows += [
                {"task": task, "features": x.tolist(), "label": float(y)}
                for x, y in zip(data.X, data.y, strict=True)
            ]
        response = client.post(
            f"/v1/studies/{study_id}/comparisons", json={"comparisons": rows}
        )
        assert response.status_code == 200, response.text
        assert response.json()["inserted"] == len(rows)
    pytest.fail("the campaign did not complete within 50 rounds")


def test_active_campaign_over_http(client, instance):
    names = instance.source_names
    planted = min_l1_representation(instance.source_thetas, instance.target_theta)
    relevant = {names[m] for m in planted.support}
    study = client.post(
        "/v1/studies",
        json={
            "name": "planted campaign",
            "dimension": instance.dimension,
            "rank": instance.rank,
            "source_tasks": names,
            "target_task": "target",
            "relevance": None,
            "prior": None,
            "budget": {
                "source": 3000,
                "target": 400,
                "pilot_source": 2400,
                "pilot_target": 800,
            },
        },
    ).json()
    study_id = study["id"]

    phases = run_campaign(client, instance, study_id)

    assert phases == ["pilot", "main", "complete"]
    fits = client.get(f"/v1/studies/{study_id}/fits").json()["items"]
    assert [(fit["phase"], fit["trigger"], fit["status"]) for fit in fits] == [
        ("main", "auto", "succeeded"),
        ("pilot", "auto", "succeeded"),
    ]
    main_fit, pilot_fit = fits

    # The pilot estimate puts its two largest weights on the planted support.
    estimate = pilot_fit["relevance"]
    largest = sorted(estimate, key=lambda name: -abs(estimate[name]))[:2]
    assert set(largest) == relevant, estimate

    # Main-phase quotas follow the estimate: relevant tasks get more labels.
    planned = main_fit["labels"]
    pilot_counts = pilot_fit["labels"]
    main_counts = {name: planned[name] - pilot_counts[name] for name in names}
    assert sum(main_counts.values()) == 3000
    assert min(main_counts[name] for name in relevant) > max(
        main_counts[name] for name in names if name not in relevant
    )

    # The final estimate is close to the planted target in Euclidean norm.
    model = client.get(f"/v1/studies/{study_id}/model").json()
    assert model["fit_id"] == main_fit["id"]
    error = np.linalg.norm(np.array(model["theta"]) - instance.target_theta)
    assert error < 0.35 * np.linalg.norm(instance.target_theta)

    # The pessimistic policy beats choosing uniformly at random.
    contexts = make_contexts(instance, 300, 5, np.random.default_rng(7))
    response = client.post(
        f"/v1/studies/{study_id}/policy",
        json={
            "contexts": [
                {"id": s, "actions": actions.tolist(), "reference": "mean"}
                for s, actions in enumerate(contexts)
            ],
            "mode": "pessimistic",
        },
    )
    assert response.status_code == 200, response.text
    chosen = [decision["action"] for decision in response.json()["decisions"]]
    policy_regret = suboptimality(chosen, contexts, instance.target_theta)
    uniform = [np.full(len(actions), 1.0 / len(actions)) for actions in contexts]
    random_regret = suboptimality(uniform, contexts, instance.target_theta)
    assert policy_regret < 0.3 * random_regret, (policy_regret, random_regret)
