"""Run ``prefbudget worker`` with every fit slowed down, for the crash test.

Before each fit computes, this wrapper writes ``<marker dir>/<pid>-<n>`` and
sleeps ``PREFBUDGET_TEST_FIT_DELAY`` seconds, so the test can tell which
process claimed the fit and kill it mid-fit. Everything else is the real
worker: the CLI, the claim, the heartbeats and the database writes.

Usage: python slow_worker.py MARKER_DIR   (configured by PREFBUDGET_* variables)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import app.jobs.runner as runner
from app.cli import main

marker_dir = Path(sys.argv[1])
delay = float(os.environ["PREFBUDGET_TEST_FIT_DELAY"])
real_compute_fit = runner.compute_fit
started = 0


def slow_compute_fit(inputs):
    global started
    started += 1
    (marker_dir / f"{os.getpid()}-{started}").write_text(str(time.time()))
    time.sleep(delay)
    return real_compute_fit(inputs)


runner.compute_fit = slow_compute_fit
sys.exit(main(["worker"]))
