"""A client generated from /openapi.json drives a campaign against a live server.

The test starts uvicorn on a free loopback port and downloads the OpenAPI
document. openapi-python-client, a third-party generator, turns it into a
Python package, which the test imports to run an Algorithm 2 study: quotas,
comparisons, the automatic fits of the in-process runner, the model and the
policy.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "prefbudget_generated_client"
THETAS = {
    "a": np.array([1.5, -1.0, 0.0, 0.0]),
    "b": np.array([0.0, 1.0, 1.0, 0.0]),
    "c": np.array([1.0, 0.0, 2.0, 0.0]),
}
THETAS["t"] = THETAS["a"] + 0.5 * THETAS["b"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Any:
    """Run ``uvicorn app.main:create_app`` on loopback; yield its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "PREFBUDGET_DATABASE_URL": database_url,
        "PREFBUDGET_AUTH_DISABLED": "true",
        "PREFBUDGET_RUN_FITS_IN_PROCESS": "true",
        "PREFBUDGET_FIT_POLL_SECONDS": "0.05",
    }
    log = (tmp_path / "uvicorn.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"uvicorn exited: {(tmp_path / 'uvicorn.log').read_text()}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("uvicorn did not answer /healthz within 30 s")
            time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def generated(live_server: str, tmp_path: Path) -> ModuleType:
    """Generate, import and return the client package for the live server."""
    if not GENERATOR.exists():
        pytest.skip(f"{GENERATOR} is not installed")
    spec = tmp_path / "openapi.json"
    spec.write_bytes(httpx.get(f"{live_server}/openapi.json", timeout=10).content)
    result = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(spec),
            "--output-path",
            str(tmp_path / PACKAGE),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def endpoint(package: ModuleType, tag: str, prefix: str) -> ModuleType:
    """Import the generated module of the operation whose id starts with ``prefix``.

    The generator names modules after the operation ids, which FastAPI builds
    from the endpoint function, path and method.
    """
    tag_package = importlib.import_module(f"{package.__name__}.api.{tag}")
    for info in pkgutil.iter_modules(tag_package.__path__):
        if info.name.startswith(prefix):
            return importlib.import_module(f"{tag_package.__name__}.{info.name}")
    raise AssertionError(f"no generated operation {prefix}* under api.{tag}")


@pytest.mark.slow
def test_generated_client_runs_a_campaign(generated, live_server):
    models = importlib.import_module(f"{generated.__name__}.models")
    client = generated.Client(base_url=live_server, timeout=60.0)
    create_study = endpoint(generated, "studies", "create_study")
    get_study = endpoint(generated, "studies", "get_study")
    get_quotas = endpoint(generated, "quotas", "get_quotas")
    post_comparisons = endpoint(generated, "comparisons", "post_comparisons")
    get_model = endpoint(generated, "fits", "get_model")
    list_fits = endpoint(generated, "fits", "list_fits")
    choose = endpoint(generated, "policy", "choose")

    created = create_study.sync_detailed(
        client=client,
        body=models.StudyCreate.from_dict(
            {
                "name": "generated client campaign",
                "dimension": 4,
                "rank": 2,
                "source_tasks": ["a", "b", "c"],
                "target_task": "t",
                "relevance": None,
                "prior": None,
                "budget": {
                    "source": 300,
                    "target": 60,
                    "pilot_source": 150,
                    "pilot_target": 60,
                },
            }
        ),
    )
    assert created.status_code == 201, created.content
    study_id = created.parsed.id

    rng = np.random.default_rng(3)
    phases = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        quotas = get_quotas.sync(study_id, client=client, batch=200)
        phase = str(
            quotas.phase.value if hasattr(quotas.phase, "value") else quotas.phase
        )
        if not phases or phases[-1] != phase:
            phases.append(phase)
        if phase == "complete":
            break
        plan = quotas.next_batch.to_dict()
        if sum(plan.values()) == 0:
            time.sleep(0.1)
            continue
        rows = []
        for task, count in plan.items():
            X = rng.standard_normal((count, 4))
            p = 1.0 / (1.0 + np.exp(-X @ THETAS[task]))
            y = (rng.random(count) < p).astype(float)
            rows += [
                {"task": task, "features": x.tolist(), "label": float(label)}
                for x, label in zip(X, y, strict=True)
            ]
        posted = post_comparisons.sync_detailed(
            study_id,
            client=client,
            body=models.ComparisonBatch.from_dict({"comparisons": rows}),
        )
        assert posted.status_code == 200, posted.content
        assert posted.parsed.inserted == len(rows)

    assert phases == ["pilot", "main", "complete"]
    study = get_study.sync(study_id, client=client)
    assert str(getattr(study.phase, "value", study.phase)) == "complete"
    fits = list_fits.sync(study_id, client=client).items
    assert len(fits) == 2
    assert all(str(getattr(f.status, "value", f.status)) == "succeeded" for f in fits)

    model = get_model.sync(study_id, client=client)
    assert model.fit_id == fits[0].id
    assert len(model.theta) == 4
    assert len(model.basis) == 2

    contexts = [rng.standard_normal((3, 4)) for _ in range(10)]
    decided = choose.sync_detailed(
        study_id,
        client=client,
        body=models.PolicyRequest.from_dict(
            {
                "contexts": [
                    {"id": f"c{s}", "actions": actions.tolist(), "reference": "mean"}
                    for s, actions in enumerate(contexts)
                ],
                "mode": "pessimistic",
            }
        ),
    )
    assert decided.status_code == 200, decided.content
    assert decided.parsed.fit_id == model.fit_id
    assert len(decided.parsed.decisions) == 10
    for decision in decided.parsed.decisions:
        assert 0 <= decision.action < 3
        assert decision.lower_bound <= decision.estimate + 1e-12

    missing = get_model.sync_detailed("no-such-study", client=client)
    assert missing.status_code == 404
