"""Ingest rejects malformed input with a problem naming row and field, storing nothing.

Covers the JSON batch endpoint (both its fast and its validating path), the
JSON Lines import and the Parquet import. The cases are deeply nested JSON,
NUL characters in ids and task names, feature values over the shared bound,
and strings or booleans where numbers belong. The export's phase filter and
the batch endpoint's content type are checked as well.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.schemas.common import MAX_ABS_FEATURE
from app.services.ingest import INVALID_JSON_DETAIL

PROBLEM = "application/problem+json"
NDJSON = "application/x-ndjson"
PARQUET = "application/vnd.apache.parquet"
DEPTH = 100_000


def _post_raw(client, study_id, content, content_type="application/json"):
    headers = {} if content_type is None else {"content-type": content_type}
    return client.post(
        f"/v1/studies/{study_id}/comparisons", content=content, headers=headers
    )


def _post(client, study_id, rows):
    return _post_raw(client, study_id, json.dumps({"comparisons": rows}).encode())


def _import(client, study_id, content, media_type):
    return client.post(
        f"/v1/studies/{study_id}/comparisons/import",
        content=content,
        headers={"content-type": media_type},
    )


def _jsonl(rows) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _parquet(columns: dict) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def _errors(response):
    assert response.headers["content-type"] == PROBLEM, response.text
    return {(e["index"], e["field"]): e["reason"] for e in response.json()["errors"]}


def _stored(client, study_id):
    page = client.get(f"/v1/studies/{study_id}/comparisons", params={"limit": 100})
    assert page.status_code == 200, page.text
    return page.json()["items"]


def _row(**overrides):
    row = {"task": "a", "features": [1.0, 2.0, 3.0, 4.0], "label": 1.0}
    row.update(overrides)
    return row


# Deeply nested JSON ------------------------------------------------------------


def test_deeply_nested_batch_is_422(client, make_study):
    study = make_study(client)
    body = b'{"comparisons":' + b"[" * DEPTH + b"]" * DEPTH + b"}"

    response = _post_raw(client, study["id"], body)

    assert response.status_code == 422
    assert response.json()["detail"] == INVALID_JSON_DETAIL
    assert _errors(response) == {(None, "body"): "the JSON is nested too deeply"}
    assert _stored(client, study["id"]) == []


def test_deeply_nested_jsonl_line_is_422(client, make_study):
    study = make_study(client)
    content = _jsonl([_row()]) + b"[" * DEPTH + b"]" * DEPTH + b"\n"

    response = _import(client, study["id"], content, NDJSON)

    assert response.status_code == 422
    assert list(_errors(response)) == [(1, "body")]
    assert _stored(client, study["id"]) == []


# NUL characters ------------------------------------------------------------


def test_nul_in_batch_id_is_422(client, make_study):
    study = make_study(client)

    response = _post(client, study["id"], [_row(id="ok"), _row(id="bad\x00id")])

    assert response.status_code == 422
    assert "NUL" in _errors(response)[(1, "id")]
    assert _stored(client, study["id"]) == []


def test_nul_in_batch_task_is_422(client, make_study):
    study = make_study(client)

    response = _post(client, study["id"], [_row(task="a\x00")])

    assert response.status_code == 422
    assert list(_errors(response)) == [(0, "task")]


def test_nul_in_jsonl_id_and_task_is_422(client, make_study):
    study = make_study(client)
    content = _jsonl([_row(), _row(id="x\x00"), _row(task="\x00")])

    response = _import(client, study["id"], content, NDJSON)

    assert response.status_code == 422
    errors = _errors(response)
    assert "NUL" in errors[(1, "id")]
    assert (2, "task") in errors
    assert _stored(client, study["id"]) == []


def test_nul_in_parquet_id_and_task_is_422(client, make_study):
    study = make_study(client)
    content = _parquet(
        {
            "id": ["r0", "r\x001", "r2"],
            "task": ["a", "a", "b\x00"],
            "features": [[0.0, 1.0, 2.0, 3.0]] * 3,
            "label": [1.0, 0.0, 0.5],
        }
    )

    response = _import(client, study["id"], content, PARQUET)

    assert response.status_code == 422
    errors = _errors(response)
    assert "NUL" in errors[(1, "id")]
    assert errors[(2, "task")].startswith("unknown task")
    assert _stored(client, study["id"]) == []


# Feature values over the bound ----------------------------------------------

TOO_LARGE_ROWS = [
    ("features", _row(features=[1e300, 0.0, 0.0, 0.0])),
    ("features", _row(features=[0.0, 0.0, 0.0, -MAX_ABS_FEATURE * 2])),
    ("first", {"task": "a", "first": [1e300, 0, 0, 0], "second": [0] * 4, "label": 1}),
    ("second", {"task": "a", "first": [0] * 4, "second": [0, 0, 0, 1e7], "label": 1}),
    (
        "features",
        {
            "task": "a",
            "first": [MAX_ABS_FEATURE, 0, 0, 0],
            "second": [-1, 0, 0, 0],
            "label": 1,
        },
    ),
]


@pytest.mark.parametrize(("field", "row"), TOO_LARGE_ROWS)
def test_batch_value_over_bound_is_422(client, make_study, field, row):
    study = make_study(client)
    # The first row makes the batch valid apart from row 1; a batch of rows of
    # one form also exercises the fast path's check.
    good = _row() if "features" in row else {**row, "first": [0] * 4, "second": [0] * 4}

    response = _post(client, study["id"], [good, row])

    assert response.status_code == 422
    errors = _errors(response)
    assert list(errors) == [(1, field)]
    assert f"{MAX_ABS_FEATURE:g}" in errors[(1, field)]
    assert _stored(client, study["id"]) == []


def test_batch_value_at_bound_is_stored(client, make_study):
    study = make_study(client)
    features = [MAX_ABS_FEATURE, -MAX_ABS_FEATURE, 0.0, 1.0]

    response = _post(client, study["id"], [_row(features=features)])

    assert response.status_code == 200, response.text
    assert _stored(client, study["id"])[0]["features"] == features


@pytest.mark.parametrize(("field", "row"), TOO_LARGE_ROWS)
def test_jsonl_value_over_bound_is_422(client, make_study, field, row):
    study = make_study(client)

    response = _import(client, study["id"], _jsonl([_row(), row]), NDJSON)

    assert response.status_code == 422
    errors = _errors(response)
    assert list(errors) == [(1, field)]
    assert f"{MAX_ABS_FEATURE:g}" in errors[(1, field)]
    assert _stored(client, study["id"]) == []


def test_parquet_features_over_bound_is_422(client, make_study):
    study = make_study(client)
    content = _parquet(
        {
            "task": ["a", "a", "a"],
            "features": [[0.0, 1.0, 2.0, 3.0], [1e300, 0.0, 0.0, 0.0], [0.0] * 4],
            "label": [1.0, 0.0, 0.5],
        }
    )

    response = _import(client, study["id"], content, PARQUET)

    assert response.status_code == 422
    errors = _errors(response)
    assert list(errors) == [(1, "features")]
    assert f"{MAX_ABS_FEATURE:g}" in errors[(1, "features")]
    assert _stored(client, study["id"]) == []


def test_parquet_pairs_over_bound_are_422(client, make_study):
    study = make_study(client)
    zeros = [0.0] * 4
    content = _parquet(
        {
            "task": ["a", "a", "a", "a"],
            "first": [zeros, [1e300, 0.0, 0.0, 0.0], zeros, [MAX_ABS_FEATURE, 0, 0, 0]],
            "second": [zeros, zeros, [0.0, 2e6, 0.0, 0.0], [-1.0, 0, 0, 0]],
            "label": [1.0, 0.0, 0.5, 1.0],
        }
    )

    response = _import(client, study["id"], content, PARQUET)

    assert response.status_code == 422
    errors = _errors(response)
    assert set(errors) == {(1, "first"), (2, "second"), (3, "features")}
    assert _stored(client, study["id"]) == []


# Strict numbers ------------------------------------------------------------

NOT_NUMBERS = [
    ("label", _row(label="1")),
    ("label", _row(label=True)),
    ("label", _row(label=False)),
    ("features.0", _row(features=[True, 0.0, 0.0, 0.0])),
    ("features.3", _row(features=[0.0, 0.0, 0.0, "2"])),
    (
        "first.1",
        {"task": "a", "first": [0, False, 0, 0], "second": [0] * 4, "label": 1},
    ),
]


@pytest.mark.parametrize(("field", "row"), NOT_NUMBERS)
def test_batch_non_number_is_422(client, make_study, field, row):
    study = make_study(client)

    response = _post(client, study["id"], [_row(), row])

    assert response.status_code == 422
    assert list(_errors(response)) == [(1, field)]
    assert _stored(client, study["id"]) == []


@pytest.mark.parametrize(("field", "row"), NOT_NUMBERS)
def test_jsonl_non_number_is_422(client, make_study, field, row):
    study = make_study(client)

    response = _import(client, study["id"], _jsonl([_row(), row]), NDJSON)

    assert response.status_code == 422
    assert list(_errors(response)) == [(1, field)]
    assert _stored(client, study["id"]) == []


def test_integer_label_and_features_are_stored(client, make_study):
    study = make_study(client)

    response = _post(client, study["id"], [_row(features=[1, 0, -2, 3], label=1)])

    assert response.status_code == 200, response.text
    item = _stored(client, study["id"])[0]
    assert item["features"] == [1.0, 0.0, -2.0, 3.0]
    assert item["label"] == 1.0


# Export filter ---------------------------------------------------------------


def test_export_unknown_phase_is_422(client, make_study):
    study = make_study(client)

    response = client.get(
        f"/v1/studies/{study['id']}/comparisons", params={"phase": "bogus"}
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert "query.phase" in {error["field"] for error in response.json()["errors"]}


@pytest.mark.parametrize("phase", ["pilot", "main", "complete"])
def test_export_known_phase_is_accepted(client, make_study, phase):
    study = make_study(client)
    _post(client, study["id"], [_row()])

    response = client.get(
        f"/v1/studies/{study['id']}/comparisons", params={"phase": phase}
    )

    assert response.status_code == 200
    assert len(response.json()["items"]) == (1 if phase == "pilot" else 0)


# Content type ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-ndjson", "application/jsonx"]
)
def test_batch_with_other_content_type_is_415(client, make_study, content_type):
    study = make_study(client)
    body = json.dumps({"comparisons": [_row()]}).encode()

    response = _post_raw(client, study["id"], body, content_type)

    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    assert "application/json" in response.json()["detail"]
    assert _stored(client, study["id"]) == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.prefbudget+json",
    ],
)
def test_batch_with_json_content_type_is_stored(client, make_study, content_type):
    study = make_study(client)
    body = json.dumps({"comparisons": [_row()]}).encode()

    response = _post_raw(client, study["id"], body, content_type)

    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": 1, "duplicates": 0}


# Negative zero ------------------------------------------------------------------

# The batch endpoint takes its fast path for uniform rows. A batch that mixes
# feature rows with first/second rows goes through the validating path.
PAIR_ROW = {"task": "b", "first": [1, 2, 3, 4], "second": [0, 0, 0, 0], "label": 1}


def _send_negative_zero(client, study_id, path, row):
    if path == "batch_fast":
        return _post(client, study_id, [row])
    if path == "batch_validating":
        return _post(client, study_id, [row, PAIR_ROW])
    if path == "jsonl":
        return _import(client, study_id, _jsonl([row]), NDJSON)
    columns = {key: [value] for key, value in row.items()}
    return _import(client, study_id, _parquet(columns), PARQUET)


@pytest.mark.parametrize("path", ["batch_fast", "batch_validating", "jsonl", "parquet"])
def test_negative_zero_replays_positive_zero(client, make_study, path):
    study = make_study(client)
    positive = _row(id="z0", features=[0.0, 2.0, 3.0, 4.0], label=0.0)
    negative = _row(id="z0", features=[-0.0, 2.0, 3.0, 4.0], label=-0.0)
    first = _post(client, study["id"], [positive])
    assert first.status_code == 200, first.text

    response = _send_negative_zero(client, study["id"], path, negative)

    assert response.status_code == 200, response.text
    assert response.json()["duplicates"] == 1
    stored = _stored(client, study["id"])
    assert stored[0]["features"] == [0.0, 2.0, 3.0, 4.0]
    assert json.dumps(stored[0]["features"][0]) == "0.0"


def test_negative_zero_is_stored_as_zero(client, make_study):
    study = make_study(client)

    response = _post(client, study["id"], [_row(features=[-0.0, 1, 2, 3], label=-0.0)])

    assert response.status_code == 200, response.text
    item = _stored(client, study["id"])[0]
    assert json.dumps(item["features"][0]) == "0.0"
    assert json.dumps(item["label"]) == "0.0"


# Parquet column types ----------------------------------------------------------

FEATURES = [[0.0, 1.0, 2.0, 3.0]]
WRONG_PARQUET_TYPES = [
    ("id", {"id": pa.array([5], pa.int64())}),
    ("task", {"task": pa.array([1], pa.int64())}),
    ("label", {"label": pa.array(["1"], pa.string())}),
    ("label", {"label": pa.array([True], pa.bool_())}),
    ("features", {"features": pa.array([["0", "1", "2", "3"]])}),
    ("features", {"features": pa.array([1.0], pa.float64())}),
]


@pytest.mark.parametrize(("field", "override"), WRONG_PARQUET_TYPES)
def test_parquet_wrong_column_type_is_422(client, make_study, field, override):
    study = make_study(client)
    columns = {"id": ["r0"], "task": ["a"], "features": FEATURES, "label": [1.0]}
    columns.update(override)

    response = _import(client, study["id"], _parquet(columns), PARQUET)

    assert response.status_code == 422, response.text
    errors = _errors(response)
    assert list(errors) == [(None, field)]
    assert errors[(None, field)].startswith("column must contain")
    assert _stored(client, study["id"]) == []


def test_parquet_dictionary_task_is_stored(client, make_study):
    study = make_study(client)
    tasks = pa.array(["a", "b"]).dictionary_encode()
    columns = {"task": tasks, "features": FEATURES * 2, "label": [1.0, 0.0]}

    response = _import(client, study["id"], _parquet(columns), PARQUET)

    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": 2, "duplicates": 0}


@pytest.mark.parametrize("path", ["batch", "jsonl", "parquet"])
def test_label_out_of_range_reason_matches(client, make_study, path):
    study = make_study(client)
    rows = [_row(label=1.5), _row(label=-0.5)]
    if path == "batch":
        response = _post(client, study["id"], rows)
    elif path == "jsonl":
        response = _import(client, study["id"], _jsonl(rows), NDJSON)
    else:
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        response = _import(client, study["id"], _parquet(columns), PARQUET)

    assert response.status_code == 422, response.text
    errors = _errors(response)
    assert errors[(0, "label")] == "must be in [0, 1], got 1.5"
    assert errors[(1, "label")] == "must be in [0, 1], got -0.5"
