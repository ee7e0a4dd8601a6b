"""Concurrent replays of one batch store it exactly once."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from app.db.engine import create_db_engine, create_session_factory, open_session
from app.services import ingest
from app.services.studies import require_study

THREADS = 6


def _batch(prefix: str, count: int = 50):
    return [
        {"id": f"{prefix}{i}", "task": "a", "features": [i, 1.0, 2.0, 3.0], "label": 1}
        for i in range(count)
    ]


def test_concurrent_http_replays_store_once(app, client, make_study):
    study = make_study(client)
    rows = _batch("h")
    barrier = threading.Barrier(THREADS)
    results: list[tuple[int, dict]] = []

    def post() -> None:
        # No `with`: the lifespan (and its background fit runner) already
        # runs under the `client` fixture.
        own_client = TestClient(app)
        barrier.wait()
        response = own_client.post(
            f"/v1/studies/{study['id']}/comparisons", json={"comparisons": rows}
        )
        results.append((response.status_code, response.json()))

    threads = [threading.Thread(target=post) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [status for status, _ in results] == [200] * THREADS
    assert sum(body["inserted"] for _, body in results) == len(rows)
    assert sum(body["duplicates"] for _, body in results) == len(rows) * (THREADS - 1)
    stored = client.get(f"/v1/studies/{study['id']}").json()["tasks"][0]["labels"]
    assert stored == len(rows)


def test_concurrent_sessions_store_overlapping_batches_once(
    settings, client, make_study
):
    """Service-level race: overlapping id sets from separate transactions."""
    study = make_study(client)
    engine = create_db_engine(settings.database_url)
    factory = create_session_factory(engine)
    barrier = threading.Barrier(THREADS)
    inserted: list[int] = []
    failures: list[BaseException] = []

    def run(offset: int) -> None:
        rows = _batch("s", 60)[offset * 5 : offset * 5 + 30]
        barrier.wait()
        session = open_session(factory, write=True)
        try:
            loaded = require_study(session, study["id"], for_update=True)
            counts = ingest.ingest_batch(session, loaded, rows, list(range(len(rows))))
            session.commit()
            inserted.append(counts.inserted)
        except BaseException as exc:
            failures.append(exc)
            session.rollback()
        finally:
            session.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()

    assert failures == []
    distinct = len({f"s{i}" for k in range(THREADS) for i in range(k * 5, k * 5 + 30)})
    assert sum(inserted) == distinct
    stored = client.get(f"/v1/studies/{study['id']}").json()["tasks"][0]["labels"]
    assert stored == distinct
