"""Bulk import of JSON Lines and Parquet files."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

PARQUET = "application/vnd.apache.parquet"
NDJSON = "application/x-ndjson"


def _import(client, study_id, content, media_type):
    return client.post(
        f"/v1/studies/{study_id}/comparisons/import",
        content=content,
        headers={"content-type": media_type},
    )


def _all_items(client, study_id):
    page = client.get(
        f"/v1/studies/{study_id}/comparisons", params={"limit": 5000}
    ).json()
    return page["items"]


def _parquet(table: pa.Table, row_group_size: int | None = None) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size)
    return buffer.getvalue()


def _jsonl(rows) -> bytes:
    return "\n".join(json.dumps(row) for row in rows).encode() + b"\n"


@pytest.fixture
def chunked_client(settings):
    small = Settings(database_url=settings.database_url, import_chunk_rows=7)
    with TestClient(create_app(small)) as test_client:
        yield test_client


def test_jsonl_import_stores_every_row(chunked_client, make_study):
    study = make_study(chunked_client)
    rng = np.random.default_rng(0)
    rows = [
        {
            "id": f"j{i}",
            "task": "abct"[i % 4],
            "features": rng.normal(size=4).tolist(),
            "label": i % 2,
        }
        for i in range(30)
    ]
    rows.append(
        {"task": "a", "first": [1, 2, 3, 4], "second": [1, 1, 1, 1], "label": 0.5}
    )

    response = _import(chunked_client, study["id"], _jsonl(rows), NDJSON)

    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": 31, "duplicates": 0}
    items = _all_items(chunked_client, study["id"])
    assert [item["features"] for item in items[:30]] == [
        row["features"] for row in rows[:30]
    ]
    assert items[30]["features"] == [0.0, 1.0, 2.0, 3.0]


def test_jsonl_import_replay_counts_duplicates(chunked_client, make_study):
    study = make_study(chunked_client)
    rows = [
        {"id": f"r{i}", "task": "a", "features": [i, 0, 0, 0], "label": 1}
        for i in range(20)
    ]
    _import(chunked_client, study["id"], _jsonl(rows[:10]), NDJSON)

    response = _import(chunked_client, study["id"], _jsonl(rows), NDJSON)

    assert response.json() == {"inserted": 10, "duplicates": 10}


def test_jsonl_error_in_late_chunk_stores_nothing(chunked_client, make_study):
    study = make_study(chunked_client)
    rows = [{"task": "a", "features": [i, 0, 0, 0], "label": 1} for i in range(40)]
    rows[33] = {"task": "a", "features": [1, 2], "label": 1}
    rows[35] = {"task": "zzz", "features": [1, 2, 3, 4], "label": 1}
    content = _jsonl(rows[:20]) + b"\n" + _jsonl(rows[20:]) + b"{broken\n"

    response = _import(chunked_client, study["id"], content, NDJSON)

    assert response.status_code == 422
    errors = {(e["index"], e["field"]) for e in response.json()["errors"]}
    # Line numbers count the blank line after row 19.
    assert (34, "features") in errors
    assert (36, "task") in errors
    assert any(index == 41 for index, _ in errors)
    assert _all_items(chunked_client, study["id"]) == []


def test_jsonl_conflict_is_409_and_stores_nothing(chunked_client, make_study):
    study = make_study(chunked_client)
    rows = [
        {"id": f"c{i}", "task": "a", "features": [i, 0, 0, 0], "label": 1}
        for i in range(20)
    ]
    _import(chunked_client, study["id"], _jsonl(rows[15:16]), NDJSON)
    rows[15]["label"] = 0

    response = _import(chunked_client, study["id"], _jsonl(rows), NDJSON)

    assert response.status_code == 409
    assert len(_all_items(chunked_client, study["id"])) == 1


def test_parquet_import_with_features_column(chunked_client, make_study):
    study = make_study(chunked_client)
    rng = np.random.default_rng(1)
    features = rng.normal(size=(25, 4))
    table = pa.table(
        {
            "id": [f"p{i}" for i in range(25)],
            "task": ["a", "b", "c", "t", "a"] * 5,
            "features": pa.array(features.tolist(), pa.list_(pa.float64())),
            "label": rng.uniform(size=25),
        }
    )

    response = _import(chunked_client, study["id"], _parquet(table, 10), PARQUET)

    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": 25, "duplicates": 0}
    items = _all_items(chunked_client, study["id"])
    np.testing.assert_array_equal([item["features"] for item in items], features)
    assert [item["task"] for item in items] == table["task"].to_pylist()


def test_parquet_import_with_first_and_second_fixed_size(chunked_client, make_study):
    study = make_study(chunked_client)
    first = np.arange(12, dtype=np.float32).reshape(3, 4)
    second = np.ones((3, 4), dtype=np.float32)
    table = pa.table(
        {
            "task": ["a", "b", "t"],
            "first": pa.FixedSizeListArray.from_arrays(pa.array(first.ravel()), 4),
            "second": pa.FixedSizeListArray.from_arrays(pa.array(second.ravel()), 4),
            "label": pa.array([1, 0, 1], pa.int64()),
        }
    )

    response = _import(chunked_client, study["id"], _parquet(table), PARQUET)

    assert response.status_code == 200, response.text
    items = _all_items(chunked_client, study["id"])
    np.testing.assert_array_equal([item["features"] for item in items], first - second)


def test_parquet_bad_rows_are_listed_and_nothing_stored(chunked_client, make_study):
    study = make_study(chunked_client)
    table = pa.table(
        {
            "task": ["a", "nope", "a", "a", None, "a", "a", "a", "a", "a"],
            "features": pa.array(
                [
                    [1, 2, 3, 4],
                    [1, 2, 3, 4],
                    [1, 2, 3],
                    [1, float("nan"), 3, 4],
                    [1, 2, 3, 4],
                    None,
                    [1, 2, 3, 4],
                    [1, 2, 3, 4],
                    [1, 2, 3, 4],
                    [1, None, 3, 4],
                ],
                pa.list_(pa.float64()),
            ),
            "label": [1, 1, 1, 1, 1, 1, 2.0, None, 0.5, 1],
        }
    )

    response = _import(chunked_client, study["id"], _parquet(table), PARQUET)

    assert response.status_code == 422
    errors = {(e["index"], e["field"]) for e in response.json()["errors"]}
    assert errors == {
        (1, "task"),
        (2, "features"),
        (3, "features"),
        (4, "task"),
        (5, "features"),
        (6, "label"),
        (7, "label"),
        (9, "features"),
    }
    assert _all_items(chunked_client, study["id"]) == []


def test_parquet_wrong_columns_are_422(chunked_client, make_study):
    study = make_study(chunked_client)
    table = pa.table({"task": ["a"], "vector": [[1.0, 2.0, 3.0, 4.0]], "label": [1.0]})

    response = _import(chunked_client, study["id"], _parquet(table), PARQUET)

    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"vector", "features"}


def test_import_rejects_garbage_empty_and_unknown_types(chunked_client, make_study):
    study = make_study(chunked_client)

    assert (
        _import(chunked_client, study["id"], b"not parquet", PARQUET).status_code == 422
    )
    assert _import(chunked_client, study["id"], b"\n\n", NDJSON).status_code == 422
    assert _import(chunked_client, study["id"], b"a,b\n", "text/csv").status_code == 415
    assert (
        _import(chunked_client, "missing", _jsonl([{"task": "a"}]), NDJSON).status_code
        == 404
    )


def test_import_over_size_limit_is_413(settings, make_study):
    small = Settings(database_url=settings.database_url, max_import_bytes=100)
    with TestClient(create_app(small)) as client:
        study = make_study(client)
        rows = [{"task": "a", "features": [1, 2, 3, 4], "label": 1}] * 10

        response = _import(client, study["id"], _jsonl(rows), NDJSON)

        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
