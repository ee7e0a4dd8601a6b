"""A small HTTP client of the prefbudget API, and a local service for the demo.

The demo plays the labelling platform: it talks to the service only through
the version 1 REST API, as any other client would. :func:`local_service`
starts ``prefbudget serve`` on a temporary SQLite database on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""Directory that contains the ``app`` package."""

MAX_ROWS_PER_REQUEST = 5_000
"""Rows per ``POST /comparisons`` request; the service accepts up to 10,000."""


class ServiceError(RuntimeError):
    """Error status from the service, a failed fit, or a server that did not start."""


class ServiceClient:
    """Typed calls of the prefbudget version 1 API over one ``httpx.Client``.

    Parameters
    ----------
    base_url : str
        Root of the service, for example ``http://127.0.0.1:8000``.
    api_key : str or None, default=None
        Key sent as ``Authorization: Bearer <key>``; it needs the admin scope,
        because the demo creates studies.
    timeout : float, default=60.0
        Timeout of each request, in seconds.
    transport : httpx.BaseTransport, optional
        Transport to send requests through instead of the network, for tests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ServiceError(
                f"{method} {path} failed with HTTP {response.status_code}: "
                f"{response.text[:2000]}"
            )
        return response.json()

    def healthy(self) -> bool:
        """Return whether ``GET /healthz`` returns status 200."""
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def create_study(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a study with ``POST /v1/studies`` and return it."""
        return self._request("POST", "/v1/studies", json=body)

    def study(self, study_id: str) -> dict[str, Any]:
        """Return ``GET /v1/studies/{study_id}``."""
        return self._request("GET", f"/v1/studies/{study_id}")

    def quotas(self, study_id: str, *, batch: int | None = None) -> dict[str, Any]:
        """Return ``GET /v1/studies/{study_id}/quotas``, split over ``batch`` labels."""
        params = {} if batch is None else {"batch": batch}
        return self._request("GET", f"/v1/studies/{study_id}/quotas", params=params)

    def post_comparisons(
        self, study_id: str, task: str, features: np.ndarray, labels: np.ndarray
    ) -> dict[str, int]:
        """Post comparisons of one task in requests of at most 5,000 rows.

        Returns the summed ``inserted`` and ``duplicates`` counts.
        """
        totals = {"inserted": 0, "duplicates": 0}
        for start in range(0, labels.size, MAX_ROWS_PER_REQUEST):
            stop = start + MAX_ROWS_PER_REQUEST
            rows = [
                {"task": task, "features": row.tolist(), "label": float(label)}
                for row, label in zip(
                    features[start:stop], labels[start:stop], strict=True
                )
            ]
            answer = self._request(
                "POST",
                f"/v1/studies/{study_id}/comparisons",
                json={"comparisons": rows},
            )
            totals["inserted"] += int(answer.get("inserted", 0))
            totals["duplicates"] += int(answer.get("duplicates", 0))
        return totals

    def fit(self, study_id: str, fit_id: str) -> dict[str, Any]:
        """Return ``GET /v1/studies/{study_id}/fits/{fit_id}``."""
        return self._request("GET", f"/v1/studies/{study_id}/fits/{fit_id}")

    def model(self, study_id: str) -> dict[str, Any]:
        """Return ``GET /v1/studies/{study_id}/model``, the latest good fit."""
        return self._request("GET", f"/v1/studies/{study_id}/model")

    def policy(
        self,
        study_id: str,
        contexts: Sequence[np.ndarray],
        *,
        mode: str = "pessimistic",
        reference: str | int | None = "mean",
    ) -> dict[str, Any]:
        """Ask ``POST /v1/studies/{study_id}/policy`` to choose one action per context.

        Each context is an array of shape (n_actions, d) of action features.
        """
        body = {
            "contexts": [
                {"id": str(index), "actions": actions.tolist(), "reference": reference}
                for index, actions in enumerate(contexts)
            ],
            "mode": mode,
        }
        return self._request("POST", f"/v1/studies/{study_id}/policy", json=body)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Endpoint:
    """Base URL of a running service and the API key to send to it."""

    url: str
    api_key: str | None


@contextmanager
def local_service(*, startup_timeout: float = 60.0) -> Iterator[Endpoint]:
    """Run ``prefbudget serve`` on a temporary SQLite database on 127.0.0.1.

    Yields the endpoint. The server gets a fresh random admin key through
    ``PREFBUDGET_ADMIN_KEY``, known only to this process. The server process
    and the database are removed on exit. The server's output goes to a log
    file whose last lines are included in the error when the server fails to
    start.

    Raises
    ------
    ServiceError
        If the server exits, or ``/healthz`` does not return 200 within
        ``startup_timeout`` seconds.
    """
    with tempfile.TemporaryDirectory(prefix="prefbudget-demo-") as directory:
        database = Path(directory) / "demo.db"
        log_path = Path(directory) / "server.log"
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database-url",
            f"sqlite:///{database}",
        ]
        base_url = f"http://127.0.0.1:{port}"
        api_key = secrets.token_urlsafe(32)
        # The project root goes first on PYTHONPATH so that ``-m app.cli`` runs
        # this checkout's service even when the package is not installed.
        python_path = [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(part for part in python_path if part),
            "PREFBUDGET_ADMIN_KEY": api_key,
            "PREFBUDGET_DATABASE_URL": f"sqlite:///{database}",
        }
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment,
            )
            logger.info("demo.service.starting pid=%d url=%s", process.pid, base_url)
            try:
                _wait_until_healthy(process, base_url, log_path, startup_timeout)
                yield Endpoint(base_url, api_key)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    logger.warning("demo.service.kill pid=%d", process.pid)
                    process.kill()
                    process.wait()
                logger.info("demo.service.stopped pid=%d", process.pid)


def _wait_until_healthy(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    with ServiceClient(base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceError(
                    f"prefbudget serve exited with code {process.returncode} before "
                    f"it was ready. Its last output:\n{_tail(log_path)}"
                )
            if client.healthy():
                return
            time.sleep(0.2)
    raise ServiceError(
        f"prefbudget serve timed out: {base_url}/healthz did not return 200 within "
        f"{timeout:.0f} s. Its last output:\n{_tail(log_path)}"
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"
