"""Comparison batches: storage, validation, idempotency, limits and export."""

from __future__ import annotations

import json

import pytest

from app.main import create_app
from app.schemas.common import MAX_ABS_FEATURE
from app.settings import Settings

PROBLEM = "application/problem+json"


def _post(client, study_id, rows, **kwargs):
    return client.post(
        f"/v1/studies/{study_id}/comparisons", json={"comparisons": rows}, **kwargs
    )


def _export(client, study_id, **params):
    response = client.get(f"/v1/studies/{study_id}/comparisons", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _row(task="a", features=(1.0, 2.0, 3.0, 4.0), label=1.0, **extra):
    return {"task": task, "features": list(features), "label": label, **extra}


def _error_map(response):
    assert response.headers["content-type"] == PROBLEM
    return {(e["index"], e["field"]): e["reason"] for e in response.json()["errors"]}


def test_batch_is_stored_with_phase_and_counts(client, make_study):
    study = make_study(client)
    rows = [
        _row("a", id="r1"),
        _row("t", label=0.25),
        {"task": "b", "first": [1, 1, 1, 1], "second": [0.5, 2, 1, -1], "label": 0},
    ]

    response = _post(client, study["id"], rows)

    assert response.status_code == 200
    assert response.json() == {"inserted": 3, "duplicates": 0}
    items = _export(client, study["id"])["items"]
    assert [item["task"] for item in items] == ["a", "t", "b"]
    assert [item["phase"] for item in items] == ["pilot"] * 3
    assert items[0]["id"] == "r1"
    assert items[1]["id"] is None
    assert items[1]["label"] == 0.25
    assert items[2]["features"] == [0.5, -1.0, 0.0, 2.0]
    labels = {
        t["name"]: t["labels"]
        for t in client.get(f"/v1/studies/{study['id']}").json()["tasks"]
    }
    assert labels == {"a": 1, "b": 1, "c": 0, "t": 1}


def test_features_round_trip_exactly(client, make_study):
    study = make_study(client)
    vector = [0.1, -1e-300, 123456.789123456789, 2.0**-1074]

    _post(client, study["id"], [_row(features=vector)])

    assert _export(client, study["id"])["items"][0]["features"] == vector


def test_known_relevance_rows_get_main_phase(client, make_study):
    study = make_study(client, relevance={"a": 1, "b": 1, "c": 1}, budget={"source": 3})

    _post(client, study["id"], [_row()])

    assert _export(client, study["id"])["items"][0]["phase"] == "main"


def test_replayed_id_with_same_content_is_duplicate(client, make_study):
    study = make_study(client)
    rows = [_row(id="x1"), _row(id="x2", label=0.0)]
    _post(client, study["id"], rows)

    response = _post(client, study["id"], [*rows, _row(id="x3")])

    assert response.json() == {"inserted": 1, "duplicates": 2}
    assert len(_export(client, study["id"])["items"]) == 3


def test_replayed_id_with_other_content_is_409_and_stores_nothing(client, make_study):
    study = make_study(client)
    _post(client, study["id"], [_row(id="x1")])

    response = _post(client, study["id"], [_row(id="new"), _row(id="x1", label=0.5)])

    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert _error_map(response) == {
        (1, "id"): "id 'x1' is already stored with other content"
    }
    assert [item["id"] for item in _export(client, study["id"])["items"]] == ["x1"]


def test_same_id_on_other_task_is_conflict(client, make_study):
    study = make_study(client)
    _post(client, study["id"], [_row("a", id="k")])

    response = _post(client, study["id"], [_row("b", id="k")])

    assert response.status_code == 409


def test_repeated_id_inside_batch(client, make_study):
    study = make_study(client)

    same = _post(client, study["id"], [_row(id="d"), _row(id="d")])
    other = _post(client, study["id"], [_row(id="e"), _row(id="e", label=0.0)])

    assert same.json() == {"inserted": 1, "duplicates": 1}
    assert other.status_code == 409
    assert _error_map(other) == {(1, "id"): "id 'e' repeats row 0 with other content"}


def test_every_bad_row_is_listed_and_nothing_stored(client, make_study):
    study = make_study(client)
    rows = [
        _row(),  # good
        _row(features=[1, 2, 3]),  # wrong dimension
        _row(task="nope"),  # unknown task
        _row(label=1.5),  # label above 1
        _row(label=-0.1),  # label below 0
        {"task": "a", "label": 1},  # no features
        {"task": "a", "features": [1, 2, 3, 4], "first": [1, 2, 3, 4], "label": 1},
        {"task": "a", "first": [1, 2, 3, 4], "label": 1},  # second missing
        {"task": "a", "first": [1, 2, 3], "second": [1, 2, 3, 4], "label": 1},
        _row(label="yes"),
        _row(extra_field=1),
    ]

    response = _post(client, study["id"], rows)

    assert response.status_code == 422
    errors = _error_map(response)
    assert errors[(1, "features")] == "expected 4 values, got 3"
    assert errors[(2, "task")] == "unknown task 'nope'"
    assert (3, "label") in errors
    assert (4, "label") in errors
    assert errors[(5, "features")] == "missing: give features, or first and second"
    assert (6, "features") in errors
    assert (7, "second") in errors
    assert errors[(8, "first")] == "expected 4 values, got 3"
    assert (9, "label") in errors
    assert (10, "extra_field") in errors
    assert {index for index, _ in errors} == set(range(1, 11))
    assert response.json()["total_errors"] == 10
    assert _export(client, study["id"])["items"] == []


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_features_are_rejected(client, make_study, bad):
    study = make_study(client)
    body = (
        '{"comparisons": [{"task": "a", "features": [1, 2, 3, BAD], "label": 1}, '
        '{"task": "a", "first": [BAD, 0, 0, 0], "second": [0, 0, 0, 0], "label": 1}]}'
    ).replace("BAD", bad)

    response = client.post(
        f"/v1/studies/{study['id']}/comparisons",
        content=body,
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    errors = _error_map(response)
    assert errors[(0, "features")] == "contains NaN or infinity"
    assert errors[(1, "first")] == "contains NaN or infinity"


def test_difference_over_feature_bound_is_rejected(client, make_study):
    study = make_study(client)
    row = {
        "task": "a",
        "first": [MAX_ABS_FEATURE, 0, 0, 0],
        "second": [-MAX_ABS_FEATURE, 0, 0, 0],
        "label": 1,
    }

    response = _post(client, study["id"], [row])

    assert response.status_code == 422
    errors = _error_map(response)
    assert list(errors) == [(0, "features")]
    assert errors[(0, "features")].startswith("first - second has a value above")
    assert _export(client, study["id"])["items"] == []


def test_nan_label_is_rejected(client, make_study):
    study = make_study(client)
    body = '{"comparisons": [{"task": "a", "features": [1, 2, 3, 4], "label": NaN}]}'

    response = client.post(
        f"/v1/studies/{study['id']}/comparisons",
        content=body,
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    assert (0, "label") in _error_map(response)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"comparisons": []}', "comparisons"),
        (b"{}", "comparisons"),
        (b'{"comparisons": 3}', "comparisons"),
        (b"[1, 2]", "body"),
        (b"{not json", "body"),
        (b'{"comparisons": [], "x": 1}', "x"),
    ],
)
def test_malformed_batch_is_422(client, make_study, body, field):
    study = make_study(client)

    response = client.post(
        f"/v1/studies/{study['id']}/comparisons",
        content=body,
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert field in {error["field"] for error in response.json()["errors"]}


def test_unknown_study_is_404(client):
    response = _post(client, "no-such-study", [_row()])

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


def test_batch_over_10000_rows_is_413(client, make_study):
    study = make_study(client, dimension=1, rank=1)
    rows = [{"task": "a", "features": [0.5], "label": 1}] * 10_001

    response = _post(client, study["id"], rows)

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert _export(client, study["id"])["items"] == []


def test_batch_of_exactly_10000_rows_is_accepted(client, make_study):
    study = make_study(client, dimension=1, rank=1)
    rows = [{"task": "a", "features": [0.5], "label": 1}] * 10_000

    assert _post(client, study["id"], rows).json()["inserted"] == 10_000


@pytest.fixture
def small_body_client(settings, monkeypatch):
    from fastapi.testclient import TestClient

    small = Settings(database_url=settings.database_url, max_body_bytes=2000)
    with TestClient(create_app(small)) as test_client:
        yield test_client


def test_body_over_limit_is_413_by_content_length(small_body_client, make_study):
    study = make_study(small_body_client)
    rows = [_row() for _ in range(100)]

    response = _post(small_body_client, study["id"], rows)

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == 413


def test_body_over_limit_is_413_when_streamed(small_body_client, make_study):
    study = make_study(small_body_client)
    payload = json.dumps({"comparisons": [_row() for _ in range(100)]}).encode()

    def chunks():
        for start in range(0, len(payload), 500):
            yield payload[start : start + 500]

    response = small_body_client.post(
        f"/v1/studies/{study['id']}/comparisons",
        content=chunks(),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert _export(small_body_client, study["id"])["items"] == []


def test_study_body_over_limit_is_413(small_body_client):
    body = {"name": "x" * 3000}

    response = small_body_client.post("/v1/studies", json=body)

    assert response.status_code == 413


def test_export_pages_with_cursor(client, make_study):
    study = make_study(client)
    rows = [_row(id=f"p{i}", label=i / 10) for i in range(7)]
    _post(client, study["id"], rows)

    seen, cursor = [], None
    while True:
        page = _export(
            client, study["id"], limit=3, **({"cursor": cursor} if cursor else {})
        )
        assert len(page["items"]) <= 3
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == [f"p{i}" for i in range(7)]


def test_export_filters_by_task_and_phase(client, make_study):
    study = make_study(client)
    _post(client, study["id"], [_row("a"), _row("b"), _row("a")])

    assert len(_export(client, study["id"], task="a")["items"]) == 2
    assert len(_export(client, study["id"], phase="main")["items"]) == 0


def test_export_rejects_bad_cursor_and_limit(client, make_study):
    study = make_study(client)
    url = f"/v1/studies/{study['id']}/comparisons"

    assert client.get(url, params={"cursor": "garbage"}).status_code == 400
    assert client.get(url, params={"limit": 0}).status_code == 422
    assert client.get("/v1/studies/nope/comparisons").status_code == 404


def test_export_round_trips_into_another_study(client, make_study):
    source = make_study(client)
    _post(client, source["id"], [_row(id="a1"), _row("t", label=0.5)])
    target = make_study(client)
    exported = _export(client, source["id"])["items"]
    rows = [
        {
            key: item[key]
            for key in ("id", "task", "features", "label")
            if item[key] is not None
        }
        for item in exported
    ]

    assert _post(client, target["id"], rows).json() == {"inserted": 2, "duplicates": 0}
    assert _post(client, target["id"], rows[:1]).json() == {
        "inserted": 0,
        "duplicates": 1,
    }
