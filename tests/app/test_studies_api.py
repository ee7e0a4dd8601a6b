"""Study endpoints: creation rules, reads, listing and problem details."""

from __future__ import annotations

import pytest
from conftest import study_body

PROBLEM = "application/problem+json"


def _errors(response) -> dict[str, str]:
    assert response.headers["content-type"] == PROBLEM
    return {error["field"]: error["reason"] for error in response.json()["errors"]}


def test_create_active_study_starts_in_pilot(client):
    response = client.post("/v1/studies", json=study_body())

    assert response.status_code == 201
    study = response.json()
    assert study["algorithm"] == "active"
    assert study["phase"] == "pilot"
    assert [task["name"] for task in study["tasks"]] == ["a", "b", "c", "t"]
    assert [task["role"] for task in study["tasks"]] == ["source"] * 3 + ["target"]
    assert all(task["labels"] == 0 for task in study["tasks"])
    assert study["latest_fit"] is None
    assert study["created_at"].endswith("Z") or "+00:00" in study["created_at"]


def test_create_known_relevance_study_starts_in_main(client):
    body = study_body(
        relevance={"a": 1.0, "b": 0.0, "c": -0.5},
        budget={"source": 30},
        rank=None,
    )
    response = client.post("/v1/studies", json=body)

    assert response.status_code == 201
    study = response.json()
    assert study["algorithm"] == "known_relevance"
    assert study["phase"] == "main"
    assert study["relevance"] == {"a": 1.0, "b": 0.0, "c": -0.5}
    assert study["rank"] is None


def test_get_study_returns_stored_fields(client, make_study):
    created = make_study(client, settings={"confidence_level": 0.9})

    response = client.get(f"/v1/studies/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created
    assert response.json()["settings"] == {"confidence_level": 0.9}


def test_get_unknown_study_is_404_problem(client):
    response = client.get("/v1/studies/does-not-exist")

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 404
    assert problem["type"] == "urn:prefbudget:problem:not-found"
    assert problem["instance"] == "/v1/studies/does-not-exist"
    assert "does-not-exist" in problem["detail"]


def test_list_studies_pages_newest_first(client, make_study):
    ids = [make_study(client, name=f"page {i}")["id"] for i in range(3)]

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/studies", params=params).json()
        seen.extend(study["id"] for study in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    positions = [seen.index(study_id) for study_id in ids]
    assert positions == sorted(positions, reverse=True)
    assert len(seen) == len(set(seen))


def test_list_studies_rejects_bad_cursor(client):
    response = client.get("/v1/studies", params={"cursor": "!!"})

    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM


INVALID_STUDIES = [
    ("dimension", {"dimension": 0}),
    ("rank", {"rank": 4}),
    ("rank", {"rank": 0}),
    ("source_tasks.1", {"source_tasks": ["a", "a", "c"]}),
    ("target_task", {"target_task": "b"}),
    ("source_tasks", {"source_tasks": []}),
    (
        "relevance.c",
        {"relevance": {"a": 1, "b": 1}, "budget": {"source": 1, "target": 1}},
    ),
    (
        "relevance.z",
        {
            "relevance": {"a": 1, "b": 1, "c": 1, "z": 1},
            "budget": {"source": 1, "target": 1},
        },
    ),
    ("prior.a", {"prior": {"a": -1, "b": 1, "c": 1}}),
    ("prior", {"prior": {"a": 0, "b": 0, "c": 0}}),
    ("prior.c", {"prior": {"a": 1, "b": 1}}),
    (
        "prior",
        {
            "relevance": {"a": 1, "b": 1, "c": 1},
            "prior": {"a": 1, "b": 1, "c": 1},
        },
    ),
    (
        "budget.source",
        {"budget": {"source": -1, "target": 1, "pilot_source": 1, "pilot_target": 1}},
    ),
    (
        "budget.target",
        {"budget": {"source": 1, "target": 1.5, "pilot_source": 1, "pilot_target": 1}},
    ),
    ("budget.pilot_source", {"budget": {"source": 1, "target": 1, "pilot_target": 1}}),
    ("budget.pilot_target", {"budget": {"source": 1, "target": 1, "pilot_source": 1}}),
    ("settings.no_such_knob", {"settings": {"no_such_knob": 1}}),
    ("settings.confidence_level", {"settings": {"confidence_level": 1.5}}),
    ("settings.ridge_scale", {"settings": {"ridge_scale": -1}}),
    ("name", {"name": ""}),
    ("unexpected", {"unexpected": 1}),
]


@pytest.mark.parametrize(("field", "overrides"), INVALID_STUDIES)
def test_invalid_study_is_422_naming_field(client, field, overrides):
    response = client.post("/v1/studies", json=study_body(**overrides))

    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:prefbudget:problem:validation-error"
    assert field in _errors(response), problem["errors"]
    assert problem["total_errors"] == len(problem["errors"])


def test_invalid_study_lists_every_error(client):
    body = study_body(rank=9, target_task="a", prior={"a": -1, "b": 1, "c": 1})

    response = client.post("/v1/studies", json=body)

    assert response.status_code == 422
    assert {"rank", "target_task", "prior.a"} <= set(_errors(response))


def test_known_relevance_study_needs_no_pilot_budget(client):
    body = study_body(relevance={"a": 1, "b": 2, "c": 3}, budget={"source": 5})

    assert client.post("/v1/studies", json=body).status_code == 201


def test_malformed_json_body_is_422_problem(client):
    response = client.post(
        "/v1/studies",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
