"""Policy endpoint: validation, decisions against the stored model, and its cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.db.models import Fit
from app.jobs.config import FitQueueSettings
from app.jobs.runner import run_pending
from app.services.policy import MODEL_CACHE
from solvers.policy import choose_actions


@pytest.fixture
def client(app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A test client whose app does not run fits by itself."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("PREFBUDGET_RUN_FITS_IN_PROCESS", "false")
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def fitted_study(client: Any, make_study: Any) -> dict[str, Any]:
    """A study whose pilot fit succeeded (d = 4)."""
    study = make_study(client)
    rng = np.random.default_rng(5)
    theta = np.array([1.0, -1.0, 0.5, 0.0])
    rows = []
    for task, n in {"a": 4, "b": 4, "c": 4, "t": 6}.items():
        X = rng.standard_normal((n, 4))
        y = (rng.random(n) < 1 / (1 + np.exp(-X @ theta))).astype(float)
        rows += [
            {"task": task, "features": x.tolist(), "label": float(label)}
            for x, label in zip(X, y, strict=True)
        ]
    response = client.post(
        f"/v1/studies/{study['id']}/comparisons", json={"comparisons": rows}
    )
    assert response.status_code == 200, response.text
    run_pending(
        client.app.state.session_factory,
        FitQueueSettings(run_fits_in_process=False),
        "test-worker",
    )
    return study


def contexts_body(contexts: list[np.ndarray], reference: Any = "mean") -> list[dict]:
    return [
        {"id": f"c{index}", "actions": actions.tolist(), "reference": reference}
        for index, actions in enumerate(contexts)
    ]


def test_policy_without_model_is_404(client, make_study):
    study = make_study(client)
    body = {"contexts": [{"actions": [[0.0] * 4]}]}

    response = client.post(f"/v1/studies/{study['id']}/policy", json=body)

    assert response.status_code == 404
    assert response.json()["type"].endswith("no-model")


def test_policy_unknown_study_is_404(client):
    body = {"contexts": [{"actions": [[0.0] * 4]}]}

    response = client.post("/v1/studies/no-such-study/policy", json=body)

    assert response.status_code == 404


@pytest.mark.parametrize("mode", ["pessimistic", "lower_confidence_bound", "greedy"])
def test_policy_matches_solver_on_stored_model(client, fitted_study, mode):
    rng = np.random.default_rng(11)
    contexts = [rng.standard_normal((3, 4)) for _ in range(8)]
    study_id = fitted_study["id"]

    response = client.post(
        f"/v1/studies/{study_id}/policy",
        json={"contexts": contexts_body(contexts), "mode": mode},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    model = client.get(f"/v1/studies/{study_id}/model").json()
    assert body["fit_id"] == model["fit_id"]
    assert body["confidence_radius"] == model["confidence_radius"]
    assert [decision["id"] for decision in body["decisions"]] == [
        f"c{index}" for index in range(8)
    ]
    factory = client.app.state.session_factory
    with factory() as session:
        fit = session.get(Fit, model["fit_id"])
        curvature = np.frombuffer(fit.curvature, dtype="<f8").reshape(4, 4)
    expected = choose_actions(
        contexts,
        np.array(model["theta"]),
        curvature,
        model["confidence_radius"],
        mode=mode,
        references=["mean"] * 8,
    )
    assert [d["action"] for d in body["decisions"]] == expected.actions.tolist()
    np.testing.assert_allclose(
        [d["lower_bound"] for d in body["decisions"]], expected.lower_bounds
    )
    np.testing.assert_allclose(
        [d["estimate"] for d in body["decisions"]], expected.estimates
    )
    for decision in body["decisions"]:
        assert decision["lower_bound"] <= decision["estimate"] + 1e-12
    if mode == "pessimistic":
        assert body["gap"] == pytest.approx(expected.gap)
    else:
        assert body["gap"] == 0.0


def test_policy_radius_override_zero_is_greedy(client, fitted_study):
    rng = np.random.default_rng(12)
    contexts = [rng.standard_normal((4, 4)) for _ in range(5)]
    url = f"/v1/studies/{fitted_study['id']}/policy"

    override = client.post(
        url, json={"contexts": contexts_body(contexts), "confidence_radius": 0.0}
    ).json()
    greedy = client.post(
        url, json={"contexts": contexts_body(contexts), "mode": "greedy"}
    ).json()

    assert override["confidence_radius"] == 0.0
    assert [d["action"] for d in override["decisions"]] == [
        d["action"] for d in greedy["decisions"]
    ]


def test_policy_lists_every_bad_context(client, fitted_study):
    body = {
        "contexts": [
            {"actions": [[0.0] * 4, [1.0] * 4]},
            {"actions": []},
            {"actions": [[0.0] * 3, [0.0] * 4]},
            {"actions": [[0.0] * 4], "reference": 1},
            {"actions": [[0.0] * 4], "reference": -1},
        ]
    }

    response = client.post(f"/v1/studies/{fitted_study['id']}/policy", json=body)

    assert response.status_code == 422
    errors = response.json()["errors"]
    found = {(error["index"], error["field"]) for error in errors}
    assert found == {
        (1, "actions"),
        (2, "actions.0"),
        (3, "reference"),
        (4, "reference"),
    }
    assert "expected 4 values, got 3" in next(
        error["reason"] for error in errors if error["index"] == 2
    )


def test_policy_rejects_empty_contexts_and_bad_mode(client, fitted_study):
    url = f"/v1/studies/{fitted_study['id']}/policy"

    empty = client.post(url, json={"contexts": []})
    bad_mode = client.post(
        url, json={"contexts": [{"actions": [[0.0] * 4]}], "mode": "optimistic"}
    )
    bad_reference = client.post(
        url, json={"contexts": [{"actions": [[0.0] * 4], "reference": "median"}]}
    )

    boolean_reference = client.post(
        url, json={"contexts": [{"actions": [[0.0] * 4], "reference": True}]}
    )

    assert empty.status_code == 422
    assert empty.json()["errors"][0]["field"] == "contexts"
    assert bad_mode.status_code == 422
    assert bad_reference.status_code == 422
    assert boolean_reference.status_code == 422


@pytest.mark.parametrize("reference", [True, "Mean", 1.5, [0], {"index": 0}])
def test_policy_bad_reference_is_one_error(client, fitted_study, reference):
    url = f"/v1/studies/{fitted_study['id']}/policy"
    context = {"actions": [[0.0] * 4, [1.0] * 4], "reference": reference}

    response = client.post(url, json={"contexts": [context, context]})

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"].startswith("2 invalid value(s)")
    assert [error["field"] for error in body["errors"]] == [
        "contexts.0.reference",
        "contexts.1.reference",
    ]
    for error in body["errors"]:
        assert error["reason"] == 'must be null, "mean" or an action index'


def test_policy_rejects_non_finite_features(client, fitted_study):
    url = f"/v1/studies/{fitted_study['id']}/policy"
    content = '{"contexts": [{"actions": [[0, 0, 0, NaN], [0, 0, 0, 1]]}]}'

    response = client.post(
        url, content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("actions")


def test_model_cache_keeps_one_entry_per_fit(client, fitted_study):
    MODEL_CACHE.clear()
    url = f"/v1/studies/{fitted_study['id']}/policy"
    body = {"contexts": [{"actions": [[0.0] * 4, [1.0] * 4]}]}

    client.post(url, json=body)
    client.post(url, json=body)

    assert len(MODEL_CACHE._entries) == 1
