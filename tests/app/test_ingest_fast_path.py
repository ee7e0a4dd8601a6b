"""The JSON fast path accepts only what the validating path accepts, equally."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from app.schemas.common import MAX_ABS_FEATURE
from app.services.ingest import (
    ErrorCollector,
    parse_batch,
    parse_batch_fast,
    prepare_dict_rows,
    prepare_parsed,
)

VALID = [
    {"task": "a", "features": [1, 2.5], "label": 1},
    {"task": "a", "features": [-3, 2.5], "label": 0.5, "id": "x"},
    {"task": "a", "first": [1, 2.5], "second": [0, 1], "label": 0},
    {"task": "a", "features": [MAX_ABS_FEATURE, -MAX_ABS_FEATURE], "label": 0.25},
]
# Rows that the schema rejects, so both paths must reject them.
REJECTED = [
    {"task": "a", "features": [1, 2.5], "label": "1"},
    {"task": "a", "features": [1, 2.5], "label": True},
    {"task": "a", "features": [1, 2.5], "label": False},
    {"task": "a", "features": [True, 2.5], "label": 0.5},
    {"task": "a", "features": [False, 2.5], "label": 0.5},
    {"task": "a", "features": ["1", 2.5], "label": 0.5},
    {"task": "a", "first": [1, True], "second": [0, 1], "label": 0.5},
    {"task": "a", "features": [1, 2.5], "label": 0.5, "id": "x\x00y"},
]
NUL_TASK = {"task": "a\x00", "features": [1, 2.5], "label": 0.5}
# Rows that pass the schema but fail the bound on feature values.
TOO_LARGE = [
    {"task": "a", "features": [1e300, 0], "label": 0.5},
    {"task": "a", "features": [0, -MAX_ABS_FEATURE * 1.5], "label": 0.5},
    {"task": "a", "first": [1e300, 0], "second": [1e300, 0], "label": 0.5},
    {"task": "a", "first": [MAX_ABS_FEATURE, 0], "second": [-1, 0], "label": 0.5},
]
STUDY = SimpleNamespace(dimension=2, tasks=[SimpleNamespace(name="a", id=7)])
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


@pytest.mark.parametrize("row", SLOW_ONLY + REJECTED)
def test_fast_path_leaves_doubtful_rows_to_schema(row):
    assert parse_batch_fast(_body(VALID[0], row), 100) is None


def test_task_with_nul_leaves_fast_path():
    parsed = parse_batch_fast(_body(NUL_TASK), 100)

    assert parsed is not None
    assert prepare_parsed(STUDY, parsed) is None


@pytest.mark.parametrize("row", [*REJECTED, NUL_TASK])
def test_schema_rejects_non_numbers_and_nul(row):
    rows, indices, errors = parse_batch(_body(VALID[0], row), 100)

    assert indices == [0]
    assert len(rows) == 1
    assert [error.index for error in errors] == [1]


def test_fast_path_accepts_true_in_task_name():
    row = {"task": "true", "features": [1, 0], "label": 1}

    parsed = parse_batch_fast(_body(row), 100)

    assert parsed is not None
    assert parsed.task_names == ["true"]


@pytest.mark.parametrize("row", VALID)
def test_prepared_rows_match_between_paths(row):
    parsed = parse_batch_fast(_body(row), 100)
    assert parsed is not None
    fast = prepare_parsed(STUDY, parsed)
    rows, indices, _ = parse_batch(_body(row), 100)
    errors = ErrorCollector(10)
    slow = prepare_dict_rows(STUDY, rows, indices, errors)

    assert fast is not None
    assert errors.total == 0
    assert np.array_equal(fast.features, slow.features)
    assert np.array_equal(fast.labels, slow.labels)
    assert fast.task_ids == slow.task_ids == [7]
    assert fast.client_ids == slow.client_ids


@pytest.mark.parametrize("row", TOO_LARGE)
def test_both_paths_reject_features_over_bound(row):
    # The fast path takes a batch only when every row has the same form.
    companion = VALID[0] if "features" in row else VALID[2]
    body = _body(companion, row)
    parsed = parse_batch_fast(body, 100)
    assert parsed is not None
    rows, indices, _ = parse_batch(body, 100)
    errors = ErrorCollector(10)
    prepared = prepare_dict_rows(STUDY, rows, indices, errors)

    assert prepare_parsed(STUDY, parsed) is None
    assert prepared.indices == [0]
    assert {error.index for error in errors.errors} == {1}
    assert f"{MAX_ABS_FEATURE:g}" in errors.errors[0].reason


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
