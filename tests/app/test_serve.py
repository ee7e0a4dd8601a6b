"""`prefbudget serve` as a real uvicorn process on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(empty_database_url):
    port = _free_port()
    env = os.environ | {"PREFBUDGET_AUTH_DISABLED": "true", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--port",
            str(port),
            "--database-url",
            empty_database_url,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read().decode())
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("prefbudget serve did not become ready in 30 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_serve_migrates_and_answers(server):
    from conftest import study_body

    with httpx.Client(base_url=server, timeout=10) as http:
        created = http.post("/v1/studies", json=study_body())
        assert created.status_code == 201
        study_id = created.json()["id"]
        rows = [{"id": "s1", "task": "a", "features": [1, 2, 3, 4], "label": 1}]
        posted = http.post(
            f"/v1/studies/{study_id}/comparisons", json={"comparisons": rows}
        )
        assert posted.json() == {"inserted": 1, "duplicates": 0}
        missing = http.get("/v1/studies/nope")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
