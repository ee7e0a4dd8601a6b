"""The label_counts table stays equal to a grouped COUNT(*) of the comparisons."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

THREADS = 6


@pytest.fixture
def engine(settings):
    engine = create_engine(settings.database_url)
    yield engine
    engine.dispose()


def _counted(engine, study_id):
    """Return ``{(task name, phase): count}`` from a COUNT(*) of comparisons."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT t.name, c.phase, COUNT(*) FROM comparisons c "
                "JOIN tasks t ON t.id = c.task_id WHERE c.study_id = :study "
                "GROUP BY t.name, c.phase"
            ),
            {"study": study_id},
        )
        return {(name, phase): count for name, phase, count in rows}


def _table(engine, study_id):
    """Return ``{(task name, phase): count}`` as stored in label_counts."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT t.name, l.phase, l.count FROM label_counts l "
                "JOIN tasks t ON t.id = l.task_id WHERE l.study_id = :study"
            ),
            {"study": study_id},
        )
        return {(name, phase): count for name, phase, count in rows}


def _rows(prefix, tasks, *, ids=True):
    rng = np.random.default_rng(len(prefix) + len(tasks))
    return [
        {
            **({"id": f"{prefix}{i}"} if ids else {}),
            "task": task,
            "features": rng.normal(size=4).round(6).tolist(),
            "label": float(i % 2),
        }
        for i, task in enumerate(tasks)
    ]


def _post(client, study_id, rows):
    response = client.post(
        f"/v1/studies/{study_id}/comparisons", json={"comparisons": rows}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_counts_follow_batches_and_replays(client, make_study, engine):
    study = make_study(client)
    first = _rows("r", ["a", "a", "b", "t"])
    second = _rows("s", ["a", "c", "c"], ids=False)

    _post(client, study["id"], first)
    _post(client, study["id"], second)
    replay = _post(client, study["id"], [*first, *_rows("u", ["b"])])

    assert replay == {"inserted": 1, "duplicates": 4}
    expected = {("a", "pilot"): 3, ("b", "pilot"): 2, ("c", "pilot"): 2}
    expected[("t", "pilot")] = 1
    assert _counted(engine, study["id"]) == expected
    assert _table(engine, study["id"]) == expected


def test_counts_skip_repeats_within_batch(client, make_study, engine):
    study = make_study(client)
    row = _rows("d", ["a"])[0]

    assert _post(client, study["id"], [row, row, row]) == {
        "inserted": 1,
        "duplicates": 2,
    }

    assert _table(engine, study["id"]) == {("a", "pilot"): 1}
    assert _counted(engine, study["id"]) == _table(engine, study["id"])


def test_counts_unchanged_by_rejected_batches(client, make_study, engine):
    study = make_study(client)
    stored = _rows("k", ["a", "b"])
    _post(client, study["id"], stored)
    conflict = {**stored[0], "label": 1.0 - stored[0]["label"]}
    invalid = {"task": "zzz", "features": [0, 0, 0, 0], "label": 1}

    new_rows = _rows("n", ["a", "a"])
    conflicted = client.post(
        f"/v1/studies/{study['id']}/comparisons",
        json={"comparisons": [*new_rows, conflict]},
    )
    rejected = client.post(
        f"/v1/studies/{study['id']}/comparisons",
        json={"comparisons": [*new_rows, invalid]},
    )

    assert conflicted.status_code == 409
    assert rejected.status_code == 422
    assert _table(engine, study["id"]) == {("a", "pilot"): 1, ("b", "pilot"): 1}
    assert _counted(engine, study["id"]) == _table(engine, study["id"])


def test_counts_follow_imports(client, make_study, engine):
    study = make_study(client)
    url = f"/v1/studies/{study['id']}/comparisons/import"
    rows = _rows("j", ["a", "b", "b", "c", "t", "t"])
    jsonl = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    buffer = io.BytesIO()
    pq.write_table(
        pa.table(
            {
                "id": [f"p{i}" for i in range(5)],
                "task": ["c", "c", "a", "t", "b"],
                "features": [[float(i), 0.0, 1.0, 2.0] for i in range(5)],
                "label": [0.0, 1.0, 0.5, 1.0, 0.0],
            }
        ),
        buffer,
    )
    ndjson = {"content-type": "application/x-ndjson"}
    parquet = {"content-type": "application/vnd.apache.parquet"}

    assert client.post(url, content=jsonl, headers=ndjson).status_code == 200
    assert client.post(url, content=buffer.getvalue(), headers=parquet).json() == {
        "inserted": 5,
        "duplicates": 0,
    }
    replay = client.post(url, content=jsonl, headers=ndjson).json()

    assert replay == {"inserted": 0, "duplicates": 6}
    expected = {
        ("a", "pilot"): 2,
        ("b", "pilot"): 3,
        ("c", "pilot"): 3,
        ("t", "pilot"): 3,
    }
    assert _counted(engine, study["id"]) == expected
    assert _table(engine, study["id"]) == expected


def test_counts_keep_phases_apart(client, make_study, engine):
    study = make_study(client, relevance={"a": 1, "b": 1, "c": 1}, budget={"source": 9})

    _post(client, study["id"], _rows("m", ["a", "b", "t"]))

    expected = {("a", "main"): 1, ("b", "main"): 1, ("t", "main"): 1}
    assert _table(engine, study["id"]) == expected
    assert _counted(engine, study["id"]) == expected


def test_counts_after_concurrent_replays(app, client, make_study, engine):
    study = make_study(client)
    batches = [_rows("c", ["a", "b", "c", "t"] * 5) for _ in range(THREADS)]
    # Every thread also posts rows of its own, without ids.
    for number, batch in enumerate(batches):
        batch.extend(_rows(f"own{number}-", ["a"] * (number + 1), ids=False))
    barrier = threading.Barrier(THREADS)
    statuses: list[int] = []

    def post(rows) -> None:
        own_client = TestClient(app)
        barrier.wait()
        response = own_client.post(
            f"/v1/studies/{study['id']}/comparisons", json={"comparisons": rows}
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=post, args=(rows,)) for rows in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * THREADS
    own = sum(range(1, THREADS + 1))
    expected = {
        ("a", "pilot"): 5 + own,
        ("b", "pilot"): 5,
        ("c", "pilot"): 5,
        ("t", "pilot"): 5,
    }
    assert _counted(engine, study["id"]) == expected
    assert _table(engine, study["id"]) == expected


def test_study_and_quotas_report_table_counts(client, make_study):
    study = make_study(client)
    _post(client, study["id"], _rows("q", ["a", "a", "t"]))

    tasks = client.get(f"/v1/studies/{study['id']}").json()["tasks"]
    quotas = client.get(f"/v1/studies/{study['id']}/quotas").json()["tasks"]

    assert {task["name"]: task["labels"] for task in tasks} == {
        "a": 2,
        "b": 0,
        "c": 0,
        "t": 1,
    }
    assert {task["task"]: task["collected"] for task in quotas} == {
        "a": 2,
        "b": 0,
        "c": 0,
        "t": 1,
    }
