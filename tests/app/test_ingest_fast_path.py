"""The JSON fast path accepts only bodies the validating path accepts, with equal values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.services.ingest import parse_batch, parse_batch_fast

VALID = [
    {"task": "a", "features": [1, 2.5], "label": 1},
    {"task": "a", "features": [True, 2.5], "label": 0.5, "id": "x"},
    {"task": "a", "first": [1, 2.5], "second": [0, 1], "label": 0},
]
SLOW_ONLY = [
    {"task": "a", "features": ["1", 2.5], "label": 0.5},
    {"task": "a", "features": [None, 2.5], "label": 0.5},
    {"task": "a", "features": [1, 2.5], "label": True},
    {"task": "a", "features": [1, 2.5], "label": 10**400},
    {"task": "a", "features": [1, 2.5], "label": 2},
    {"task": "a", "features": [1, 2.5], "label": 0.5, "id": ""},
    {"task": "a", "features": [1, 2.5], "label": 0.5, "id": 5},
    {"task": "a", "first": [1, 2.5], "label": 0.5},
    {"task": "a", "first": [1, 2], "second": [0, 1], "features": [1, 1], "label": 0.5},
    {"task": "a", "features": [1, 2.5], "label": 0.5, "extra": 1},
    {"task": 3, "features": [1, 2.5], "label": 0.5},
    {"task": "a", "features": [[1], [2]], "label": 0.5},
    {"task": "a", "features": [2**64 + 5, 1], "label": 0.5},
    {"task": "a", "features": None, "label": 0.5},
]


def _body(*rows: dict) -> bytes:
    return json.dumps({"comparisons": list(rows)}).encode()


@pytest.mark.parametrize("row", VALID)
def test_fast_path_matches_schema_values(row):
    parsed = parse_batch_fast(_body(row), 100)
    rows, _, errors = parse_batch(_body(row), 100)
    assert parsed is not None
    assert errors == []
    expected = rows[0].get("features") or rows[0]["first"]
    assert np.array_equal(parsed.vectors[0], np.array(expected, dtype=np.float64))
    assert parsed.labels[0] == rows[0]["label"]
    assert parsed.task_names == [rows[0]["task"]]
    assert parsed.client_ids == [rows[0].get("id")]


@pytest.mark.parametrize("row", SLOW_ONLY)
def test_fast_path_leaves_doubtful_rows_to_schema(row):
    assert parse_batch_fast(_body(VALID[0], row), 100) is None


def test_fast_path_rejects_mixed_and_ragged_batches():
    mixed = _body(VALID[0], VALID[2])
    ragged = _body(VALID[0], {"task": "a", "features": [1], "label": 0.5})
    assert parse_batch_fast(mixed, 100) is None
    assert parse_batch_fast(ragged, 100) is None


@pytest.mark.parametrize(
    "body", [b"not json", b"[1]", b'{"comparisons": 5}', b'{"comparisons": []}']
)
def test_fast_path_rejects_malformed_bodies(body):
    assert parse_batch_fast(body, 100) is None


def test_fast_path_respects_row_limit():
    assert parse_batch_fast(_body(VALID[0], VALID[0]), 1) is None
