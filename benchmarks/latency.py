"""Quota and ingest latency of a live server, idle and while a fit runs.

The benchmark starts ``uvicorn app.main:create_app`` on a free loopback port.
By default the in-process fit runner of the API process runs the fit, as
``prefbudget serve`` does (the runner computes in a child process at nice 10
unless ``PREFBUDGET_FIT_ISOLATION=thread``). ``--runner worker`` and
``--runner nice-worker`` run the fit in a separate worker process instead.
It then:

1. creates an Algorithm 1 study (M source tasks, dimension d, rank k) with a
   source budget too large to be met, so no automatic fit starts, and loads
   ``labels`` comparisons through the API in batches of 5,000;
2. measures, one request at a time, ``GET /quotas?batch=100`` and
   ``POST /comparisons`` with ``ingest_rows`` rows, alternating, while
   nothing else runs (idle);
3. queues a fit with ``POST /fits``, waits until it is running, and measures
   the same requests again, counting only samples that completed while the
   fit was still running.

It prints p50 and p99 of each series and the ratio of "during a fit" to
"idle"; the target is a ratio of at most 2. Run it with
``python -m benchmarks.latency [--quick]`` or through ``main(argv)``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import httpx
import numpy as np

from solvers.simulate import make_planted_instance

LOAD_BATCH = 5000
ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ("in-process", "worker", "nice-worker")

# Body of the separate fit worker process of the "worker" runners.
WORKER_SCRIPT = """
import signal, threading
from app.jobs.runner import run_worker
from app.settings import Settings
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
run_worker(Settings(), stop)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(
    database_url: str, log_path: Path, *, in_process: bool
) -> tuple[subprocess.Popen, str]:
    """Migrate the database, start uvicorn on loopback; return the process and URL."""
    from app.db.migrations import upgrade

    upgrade(database_url)
    port = _free_port()
    env = {
        **os.environ,
        "PREFBUDGET_DATABASE_URL": database_url,
        "PREFBUDGET_AUTH_DISABLED": "true",
        "PREFBUDGET_RUN_FITS_IN_PROCESS": "true" if in_process else "false",
        "PREFBUDGET_FIT_POLL_SECONDS": "0.05",
        "PREFBUDGET_LOG_LEVEL": "WARNING",
    }
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
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited early; see {log_path}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"uvicorn /healthz timed out after 60 s; see {log_path}")


def _rows(instance: Any, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """Draw ``n`` labelled comparisons spread over the source tasks."""
    tasks = rng.integers(0, instance.n_sources, size=n)
    X = instance.sample_features(n, rng)
    logits = np.einsum("nd,dn->n", X, instance.source_thetas[:, tasks])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logits))).astype(float)
    names = instance.source_names
    return [
        {"task": names[m], "features": x.tolist(), "label": float(label)}
        for m, x, label in zip(tasks, X, y, strict=True)
    ]


def _percentiles(samples: list[float]) -> dict[str, float]:
    values = np.asarray(samples) * 1000.0
    return {
        "n": int(values.size),
        "p50_ms": float(np.percentile(values, 50)) if values.size else float("nan"),
        "p99_ms": float(np.percentile(values, 99)) if values.size else float("nan"),
    }


def _measure(
    client: httpx.Client,
    study_id: str,
    payloads: list[list[dict[str, Any]]],
    *,
    fit_id: str | None = None,
) -> dict[str, list[float]]:
    """Time alternating quota and ingest requests.

    With ``fit_id``, a sample counts only if the fit was still running after
    the request returned, and measuring stops once the fit has finished.
    """
    quota_times: list[float] = []
    ingest_times: list[float] = []
    for rows in payloads:
        started = time.perf_counter()
        response = client.get(f"/v1/studies/{study_id}/quotas", params={"batch": 100})
        quota_elapsed = time.perf_counter() - started
        response.raise_for_status()

        started = time.perf_counter()
        response = client.post(
            f"/v1/studies/{study_id}/comparisons", json={"comparisons": rows}
        )
        ingest_elapsed = time.perf_counter() - started
        response.raise_for_status()

        if fit_id is not None:
            fit = client.get(f"/v1/studies/{study_id}/fits/{fit_id}").json()
            if fit["status"] != "running":
                break
        quota_times.append(quota_elapsed)
        ingest_times.append(ingest_elapsed)
    return {"quotas": quota_times, "ingest": ingest_times}


def measure(
    *,
    database_url: str | None,
    dimension: int,
    n_sources: int,
    rank: int,
    labels: int,
    requests: int,
    ingest_rows: int,
    runner: str = "in-process",
    out: TextIO,
) -> dict[str, Any]:
    """Run the benchmark and return its figures (also written to ``out``).

    ``runner`` selects where the fit computes: ``in-process`` is the
    runner of the API process (the default of ``prefbudget serve``),
    ``worker`` a separate worker process, and ``nice-worker`` a separate
    worker process at nice level 10.
    """
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; expected one of {RUNNERS}")
    workdir = Path(tempfile.mkdtemp(prefix="prefbudget-latency-"))
    url = database_url or f"sqlite:///{workdir / 'latency.db'}"
    instance = make_planted_instance(dimension, rank, n_sources, seed=0)
    rng = np.random.default_rng(0)
    process, base_url = _start_server(
        url, workdir / "uvicorn.log", in_process=runner == "in-process"
    )
    worker = None
    if runner != "in-process":
        command = [sys.executable, "-c", WORKER_SCRIPT]
        if runner == "nice-worker":
            command = ["nice", "-n", "10", *command]
        worker = subprocess.Popen(
            command,
            env={**os.environ, "PREFBUDGET_DATABASE_URL": url},
            cwd=ROOT,
            stdout=(workdir / "worker.log").open("w"),
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=base_url, timeout=600) as client:
            names = instance.source_names
            study = client.post(
                "/v1/studies",
                json={
                    "name": "latency benchmark",
                    "dimension": dimension,
                    "rank": rank,
                    "source_tasks": instance.source_names,
                    "target_task": "target",
                    "relevance": dict(
                        zip(names, instance.relevance.tolist(), strict=True)
                    ),
                    "prior": None,
                    "budget": {"source": 10**9, "target": 0},
                },
            )
            study.raise_for_status()
            study_id = study.json()["id"]

            load_started = time.perf_counter()
            for start in range(0, labels, LOAD_BATCH):
                rows = _rows(instance, rng, min(LOAD_BATCH, labels - start))
                client.post(
                    f"/v1/studies/{study_id}/comparisons", json={"comparisons": rows}
                ).raise_for_status()
            load_seconds = time.perf_counter() - load_started

            payloads = [_rows(instance, rng, ingest_rows) for _ in range(requests)]
            idle = _measure(client, study_id, payloads)

            fit = client.post(f"/v1/studies/{study_id}/fits").json()
            while (
                client.get(f"/v1/studies/{study_id}/fits/{fit['id']}").json()["status"]
                == "queued"
            ):
                time.sleep(0.01)
            busy = _measure(client, study_id, payloads, fit_id=fit["id"])
            while True:
                final = client.get(f"/v1/studies/{study_id}/fits/{fit['id']}").json()
                if final["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.1)
    finally:
        for child in (worker, process):
            if child is None:
                continue
            child.terminate()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    results: dict[str, Any] = {
        "database": url.split(":", 1)[0],
        "runner": runner,
        "dimension": dimension,
        "n_sources": n_sources,
        "rank": rank,
        "labels_loaded": labels,
        "load_seconds": load_seconds,
        "ingest_rows_per_request": ingest_rows,
        "fit_status": final["status"],
        "fit_seconds": (final.get("diagnostics") or {}).get("duration_seconds"),
    }
    for name in ("quotas", "ingest"):
        idle_stats = _percentiles(idle[name])
        busy_stats = _percentiles(busy[name])
        results[name] = {
            "idle": idle_stats,
            "during_fit": busy_stats,
            "p50_ratio": busy_stats["p50_ms"] / idle_stats["p50_ms"],
            "p99_ratio": busy_stats["p99_ms"] / idle_stats["p99_ms"],
        }

    out.write(
        f"server: uvicorn on loopback, {results['database']}, fit runner: {runner}\n"
        f"study: Algorithm 1, d={dimension}, M={n_sources}, k={rank}, "
        f"{labels} labels loaded in {load_seconds:.1f} s\n"
        f"fit: {final['status']} in {results['fit_seconds']} s\n"
    )
    out.write(
        f"{'request':<10}{'phase':<12}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'p50 x':>8}{'p99 x':>8}\n"
    )
    for name in ("quotas", "ingest"):
        entry = results[name]
        for phase in ("idle", "during_fit"):
            stats = entry[phase]
            ratios = (
                f"{entry['p50_ratio']:>8.2f}{entry['p99_ratio']:>8.2f}"
                if phase == "during_fit"
                else ""
            )
            out.write(
                f"{name:<10}{phase:<12}{stats['n']:>5}{stats['p50_ms']:>10.1f}"
                f"{stats['p99_ms']:>10.1f}{ratios}\n"
            )
    worst = max(results[name]["p50_ratio"] for name in ("quotas", "ingest"))
    out.write(f"target: p50 during a fit within 2x of idle -> worst {worst:.2f}x\n")
    out.flush()
    return results


def run(quick: bool = False, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run with the default sizes, or smaller ones with ``quick`` (``make bench``)."""
    return measure(
        database_url=None,
        dimension=64,
        n_sources=20,
        rank=5,
        labels=40_000 if quick else 200_000,
        requests=40 if quick else 200,
        ingest_rows=100,
        out=out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--database-url",
        help="database to benchmark (default: a new SQLite file in a temporary "
        "directory); it is migrated to the head revision first",
    )
    parser.add_argument("--dimension", type=int, default=64, help="feature dimension d")
    parser.add_argument("--sources", type=int, default=20, help="source tasks M")
    parser.add_argument("--rank", type=int, default=5, help="rank k of the study")
    parser.add_argument(
        "--labels",
        type=int,
        default=200_000,
        help="comparisons loaded before measuring; more labels make the fit longer",
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="quota and ingest requests per phase"
    )
    parser.add_argument(
        "--ingest-rows", type=int, default=100, help="comparisons per ingest request"
    )
    parser.add_argument(
        "--runner",
        choices=RUNNERS,
        default="in-process",
        help="where the fit runs: the in-process runner of the API process "
        "(default), a separate worker process, or one at nice 10",
    )

    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    results = measure(
        database_url=args.database_url,
        dimension=args.dimension,
        n_sources=args.sources,
        rank=args.rank,
        labels=args.labels,
        requests=args.requests,
        ingest_rows=args.ingest_rows,
        runner=args.runner,
        out=sys.stdout,
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
