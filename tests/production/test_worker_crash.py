"""Two real worker processes on PostgreSQL; one is killed in the middle of a fit.

The fit must be re-queued after the stale timeout, finish exactly once on the
surviving worker with its attempts recorded, and every label posted before and
during the crash must still be stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ADMIN_HEADERS, _fresh_database
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from app.db import migrations
from app.db.models import Comparison, Fit
from app.main import create_app
from app.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SLOW_WORKER = Path(__file__).with_name("slow_worker.py")
FIT_DELAY_SECONDS = 3.0
STALE_SECONDS = 2.0

# Planted parameters for d = 4: t = a + 0.5 b, c unrelated.
THETAS = {
    "a": np.array([1.5, -1.0, 0.0, 0.0]),
    "b": np.array([0.0, 1.0, 1.0, 0.0]),
    "c": np.array([1.0, 0.0, 2.0, 0.0]),
}
THETAS["t"] = THETAS["a"] + 0.5 * THETAS["b"]


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database at the head revision, dropped afterwards."""
    for url in _fresh_database("postgresql", tmp_path):
        migrations.upgrade(url)
        yield url


def worker_environment(database_url: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        PYTHONPATH=str(REPO),
        PREFBUDGET_DATABASE_URL=database_url,
        PREFBUDGET_LOG_FORMAT="plain",
        PREFBUDGET_FIT_POLL_SECONDS="0.2",
        PREFBUDGET_FIT_HEARTBEAT_SECONDS="0.3",
        PREFBUDGET_FIT_STALE_SECONDS=str(STALE_SECONDS),
        PREFBUDGET_FIT_MAX_ATTEMPTS="3",
        PREFBUDGET_TEST_FIT_DELAY=str(FIT_DELAY_SECONDS),
    )
    return environment


def wait_for(condition, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def label_batch(counts: dict[str, int], prefix: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    for task, count in counts.items():
        features = rng.normal(size=(count, 4))
        probabilities = 1.0 / (1.0 + np.exp(-features @ THETAS[task]))
        labels = (rng.random(count) < probabilities).astype(float)
        for index in range(count):
            rows.append(
                {
                    "id": f"{prefix}-{task}-{index}",
                    "task": task,
                    "features": features[index].tolist(),
                    "label": float(labels[index]),
                }
            )
    return {"comparisons": rows}


def test_killed_worker_fit_completes_once(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFBUDGET_RUN_FITS_IN_PROCESS", "false")
    app = create_app(Settings(database_url=postgres_url))
    client = TestClient(app, headers=ADMIN_HEADERS)
    markers = tmp_path / "markers"
    markers.mkdir()

    # A known-relevance study with a budget far above the labels posted, so
    # that only the manual fit below is queued.
    study = client.post(
        "/v1/studies",
        json={
            "name": "crash test",
            "dimension": 4,
            "rank": 2,
            "source_tasks": ["a", "b", "c"],
            "target_task": "t",
            "relevance": {"a": 1.0, "b": 0.5, "c": 0.0},
            "prior": None,
            "budget": {"source": 3000},
            "settings": {},
        },
    )
    assert study.status_code == 201, study.text
    study_id = study.json()["id"]
    first = {"a": 60, "b": 60, "c": 60, "t": 40}
    posted = client.post(
        f"/v1/studies/{study_id}/comparisons", json=label_batch(first, "first", 1)
    )
    assert posted.json() == {"inserted": 220, "duplicates": 0}

    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(SLOW_WORKER), str(markers)],
            env=worker_environment(postgres_url),
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        for log in logs
    ]
    try:
        wait_for(
            lambda: all("fit.worker_started" in log.read_text() for log in logs),
            30,
            "both workers to start",
        )
        fit = client.post(f"/v1/studies/{study_id}/fits")
        assert fit.status_code == 202, fit.text
        fit_id = fit.json()["id"]

        # Kill the worker that started computing the fit.
        first_marker = wait_for(lambda: sorted(markers.iterdir()), 30, "a fit to start")
        victim_pid = int(first_marker[0].name.split("-")[0])
        victim = next(worker for worker in workers if worker.pid == victim_pid)
        survivor = next(worker for worker in workers if worker.pid != victim_pid)
        running = client.get(f"/v1/studies/{study_id}/fits/{fit_id}").json()
        assert running["status"] == "running"

        # Labels that arrive during the fit and the crash are kept.
        during = {"a": 10, "t": 10}
        posted = client.post(
            f"/v1/studies/{study_id}/comparisons", json=label_batch(during, "during", 2)
        )
        assert posted.json() == {"inserted": 20, "duplicates": 0}
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL

        done = wait_for(
            lambda: (
                (body := client.get(f"/v1/studies/{study_id}/fits/{fit_id}").json())[
                    "status"
                ]
                in ("succeeded", "failed")
                and body
            ),
            STALE_SECONDS + FIT_DELAY_SECONDS + 30,
            "the fit to finish on the surviving worker",
        )
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        exit_codes = [worker.wait(timeout=30) for worker in workers]

    assert done["status"] == "succeeded", done
    assert exit_codes[workers.index(survivor)] == 0

    # One attempt per worker: the killed one and the one that finished.
    started = sorted(marker.name for marker in markers.iterdir())
    assert started == sorted([f"{victim.pid}-1", f"{survivor.pid}-1"])

    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            fits = connection.execute(
                select(Fit.id, Fit.status, Fit.attempts, Fit.worker_id).where(
                    Fit.study_id == study_id
                )
            ).all()
            stored = connection.scalar(
                select(func.count())
                .select_from(Comparison)
                .where(Comparison.study_id == study_id)
            )
    finally:
        engine.dispose()
    assert len(fits) == 1
    assert fits[0].status == "succeeded"
    assert fits[0].attempts == 2
    assert f":{survivor.pid}:" in fits[0].worker_id
    assert stored == 220 + 20

    # The fit used every label stored when the surviving worker loaded them.
    assert sum(done["labels"].values()) == 240

    succeeded_lines = sum(log.read_text().count("fit.succeeded") for log in logs)
    assert succeeded_lines == 1
    assert "fit.requeued" in logs[workers.index(survivor)].read_text()
