"""Run the benchmarks: ``python -m benchmarks [name ...] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time

BENCHMARKS = {
    "sample_efficiency": "benchmarks.sample_efficiency",
    "fit_speed": "benchmarks.fit_speed",
    "ingest": "benchmarks.ingest",
    "latency": "benchmarks.latency",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="name",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer seeds and smaller sizes, for a smoke run of about a minute",
    )
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    sys.stdout.write(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load:.2f} at start\n"
    )
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        sys.stdout.write(f"\n=== {name}{' (quick)' if args.quick else ''} ===\n")
        started = time.perf_counter()
        module.run(quick=args.quick, out=sys.stdout)
        sys.stdout.write(f"[{name} took {time.perf_counter() - started:.0f} s]\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
