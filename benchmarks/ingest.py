"""Ingest throughput of a real server against a plain SQLAlchemy bulk insert.

Set-up: ``prefbudget serve`` runs as a uvicorn subprocess on a free loopback
port (SQLite file in a temporary directory by default, or ``--database-url``);
the benchmark process is the HTTP client (httpx) and also runs the baseline
against the same database, in the same run:

1. JSON batches: ``batches`` requests of 1,000 comparisons at d = 64 to
   ``POST /v1/studies/{id}/comparisons``, one after another. The request
   bodies are encoded before the clock starts. Baseline: the same rows,
   inserted with one SQLAlchemy Core ``insert(Comparison)`` executemany per
   1,000 rows, one committed transaction each, timing the parameter building
   (feature bytes) and the insert. API batches and baseline transactions
   alternate, so that load from other processes hits both alike.
2. Parquet import: one file of ``import_rows`` such rows (1,000,000 by
   default) sent to ``POST /v1/studies/{id}/comparisons/import``. Baseline:
   the same rows in one transaction, 20,000 per executemany. The server's
   peak resident memory (``VmHWM`` from ``/proc``) is reported next to the
   file size.

Rates are comparisons per second; the ratio is server rate / baseline rate
(targets: at least 0.5 for JSON batches, 0.7 for the Parquet import). Run
``python -m benchmarks.ingest [--quick]`` or through ``main(argv)``.
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

ROOT = Path(__file__).resolve().parents[1]
DIMENSION = 64
BATCH_ROWS = 1000
CHUNK_ROWS = 20_000
TASKS = ["s1", "s2", "s3", "t"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _study_body(name: str) -> dict[str, Any]:
    # Algorithm 2 with pilot budgets far above the rows sent, so the study stays
    # in its pilot phase, every task takes labels and no fit runs.
    huge = 10**9
    return {
        "name": name,
        "dimension": DIMENSION,
        "rank": 2,
        "source_tasks": TASKS[:-1],
        "target_task": TASKS[-1],
        "relevance": None,
        "budget": {
            "source": huge,
            "target": huge,
            "pilot_source": huge // 2,
            "pilot_target": huge // 2,
        },
    }


class Server:
    """``prefbudget serve`` in a subprocess on a free loopback port."""

    def __init__(self, database_url: str) -> None:
        self.port = _free_port()
        env = os.environ | {
            "PREFBUDGET_AUTH_DISABLED": "true",
            "PREFBUDGET_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--port",
                str(self.port),
                "--database-url",
                database_url,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("prefbudget serve exited during start-up")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prefbudget serve did not become ready within 60 s")

    def peak_rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return -1

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _rows(
    rng: np.random.Generator, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    features = rng.normal(size=(count, DIMENSION))
    labels = rng.integers(0, 2, size=count).astype(np.float64)
    tasks = rng.integers(0, len(TASKS), size=count)
    return features, labels, tasks


class CoreBaseline:
    """Plain SQLAlchemy Core bulk insert of benchmark rows into one study.

    Each row gets the same columns the service stores: study, task, no client
    id, the features as float64 bytes, the label, the study's phase and a
    64-character placeholder content hash.
    """

    def __init__(self, database_url: str, study_id: str) -> None:
        from sqlalchemy import select

        from app.db.engine import create_db_engine
        from app.db.models import Study, Task

        self.engine = create_db_engine(database_url)
        self.study_id = study_id
        with self.engine.connect() as connection:
            task_ids = dict(
                connection.execute(
                    select(Task.name, Task.id).where(Task.study_id == study_id)
                ).all()
            )
            self.phase = connection.execute(
                select(Study.phase).where(Study.id == study_id)
            ).scalar_one()
        self.task_ids = [task_ids[name] for name in TASKS]

    def insert(self, rows: tuple[np.ndarray, ...], start: int, stop: int) -> float:
        """Insert rows ``start:stop`` in one transaction; return the seconds."""
        from sqlalchemy import insert

        from app.db.models import Comparison

        features, labels, tasks = rows
        placeholder_hash = "0" * 64
        started = time.perf_counter()
        with self.engine.begin() as connection:
            for chunk in range(start, stop, CHUNK_ROWS):
                end = min(chunk + CHUNK_ROWS, stop)
                values = [
                    {
                        "study_id": self.study_id,
                        "task_id": self.task_ids[tasks[i]],
                        "client_id": None,
                        "features": features[i].tobytes(),
                        "label": float(labels[i]),
                        "phase": self.phase,
                        "content_hash": placeholder_hash,
                    }
                    for i in range(chunk, end)
                ]
                connection.execute(insert(Comparison.__table__), values)
        return time.perf_counter() - started

    def close(self) -> None:
        self.engine.dispose()


def _json_batches(
    http: httpx.Client,
    study_id: str,
    baseline: CoreBaseline,
    rows: tuple[np.ndarray, ...],
) -> tuple[float, float]:
    """Time the API batches and the baseline inserts, interleaved.

    Batch ``i`` goes to the API and the same 1,000 rows to the baseline in
    turn (the order alternates), so load from other processes on the machine
    falls on both sides alike. Returns (API seconds, baseline seconds).
    """
    features, labels, tasks = rows
    bodies = []
    for start in range(0, len(labels), BATCH_ROWS):
        batch = [
            {
                "task": TASKS[tasks[i]],
                "features": features[i].tolist(),
                "label": labels[i],
            }
            for i in range(start, min(start + BATCH_ROWS, len(labels)))
        ]
        bodies.append(json.dumps({"comparisons": batch}).encode())

    url = f"/v1/studies/{study_id}/comparisons"
    headers = {"content-type": "application/json"}
    api_seconds = baseline_seconds = 0.0
    for number, body in enumerate(bodies):
        start = number * BATCH_ROWS
        stop = min(start + BATCH_ROWS, len(labels))
        if number % 2:
            baseline_seconds += baseline.insert(rows, start, stop)
        started = time.perf_counter()
        response = http.post(url, content=body, headers=headers)
        response.raise_for_status()
        api_seconds += time.perf_counter() - started
        if not number % 2:
            baseline_seconds += baseline.insert(rows, start, stop)
    return api_seconds, baseline_seconds


def _write_parquet(path: Path, rows: tuple[np.ndarray, ...]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    features, labels, tasks = rows
    schema = pa.schema(
        [
            ("task", pa.string()),
            ("features", pa.list_(pa.float64(), DIMENSION)),
            ("label", pa.float64()),
        ]
    )
    names = np.array(TASKS, dtype=object)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(labels), 100_000):
            stop = min(start + 100_000, len(labels))
            values = pa.array(features[start:stop].ravel())
            table = pa.table(
                {
                    "task": pa.array(names[tasks[start:stop]], pa.string()),
                    "features": pa.FixedSizeListArray.from_arrays(values, DIMENSION),
                    "label": labels[start:stop],
                },
                schema=schema,
            )
            writer.write_table(table)


def _file_chunks(path: Path, size: int = 1 << 20):
    with open(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def run(
    quick: bool = False,
    out: TextIO = sys.stdout,
    *,
    database_url: str | None = None,
    batches: int | None = None,
    import_rows: int | None = None,
) -> dict[str, float]:
    """Run both measurements and write a report to ``out``; return the figures."""
    batches = batches or (20 if quick else 100)
    import_rows = import_rows or (100_000 if quick else 1_000_000)
    rng = np.random.default_rng(0)
    figures: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="prefbudget-bench-") as directory:
        url = database_url or f"sqlite:///{Path(directory) / 'bench.db'}"
        backend = url.split(":", 1)[0]
        out.write(
            f"database: {backend}; server: prefbudget serve (uvicorn) on 127.0.0.1; "
            f"d = {DIMENSION}\n"
        )
        server = Server(url)
        try:
            with httpx.Client(base_url=server.base, timeout=3600) as http:
                study_ids = []
                for name in ("api", "baseline", "import", "import-baseline"):
                    response = http.post("/v1/studies", json=_study_body(name))
                    response.raise_for_status()
                    study_ids.append(response.json()["id"])

                # 1. JSON batches of 1,000 against Core inserts of 1,000.
                rows = _rows(rng, batches * BATCH_ROWS)
                baseline = CoreBaseline(url, study_ids[1])
                try:
                    api_seconds, base_seconds = _json_batches(
                        http, study_ids[0], baseline, rows
                    )
                finally:
                    baseline.close()
                count = batches * BATCH_ROWS
                api_rate, base_rate = count / api_seconds, count / base_seconds
                figures.update(json_rate=api_rate, json_baseline_rate=base_rate)
                out.write(
                    f"JSON batches: {batches} x {BATCH_ROWS} rows: API {api_rate:,.0f} "
                    f"rows/s, Core insert {base_rate:,.0f} rows/s, ratio "
                    f"{api_rate / base_rate:.2f} (target >= 0.50)\n"
                )
                del rows

                # 2. Parquet import against one Core transaction.
                rows = _rows(rng, import_rows)
                path = Path(directory) / "import.parquet"
                _write_parquet(path, rows)
                size = path.stat().st_size
                rss_before = server.peak_rss_bytes()
                started = time.perf_counter()
                response = http.post(
                    f"/v1/studies/{study_ids[2]}/comparisons/import",
                    content=_file_chunks(path),
                    headers={"content-type": "application/vnd.apache.parquet"},
                )
                response.raise_for_status()
                import_seconds = time.perf_counter() - started
                peak = server.peak_rss_bytes()
                baseline = CoreBaseline(url, study_ids[3])
                try:
                    base_seconds = baseline.insert(rows, 0, import_rows)
                finally:
                    baseline.close()
                import_rate = import_rows / import_seconds
                base_rate = import_rows / base_seconds
                figures.update(
                    import_rate=import_rate,
                    import_baseline_rate=base_rate,
                    server_peak_rss=peak,
                    parquet_bytes=size,
                )
                out.write(
                    f"Parquet import: {import_rows:,} rows ({size / 2**20:,.0f} MiB): "
                    f"API {import_rate:,.0f} rows/s, Core insert {base_rate:,.0f} "
                    f"rows/s, ratio {import_rate / base_rate:.2f} (target >= 0.70)\n"
                    f"server peak RSS: {peak / 2**20:,.0f} MiB "
                    f"(before the import: {rss_before / 2**20:,.0f} MiB)\n"
                )
        finally:
            server.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest", description=__doc__
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 batches, 100,000-row import"
    )
    parser.add_argument(
        "--database-url",
        help="database to use (empty or migrated); default: a temporary SQLite file",
    )
    parser.add_argument(
        "--batches", type=int, help="number of JSON batches of 1,000 rows"
    )
    parser.add_argument("--import-rows", type=int, help="rows in the Parquet file")
    args = parser.parse_args(argv)
    run(
        args.quick,
        sys.stdout,
        database_url=args.database_url,
        batches=args.batches,
        import_rows=args.import_rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
