"""The fit job queue: claiming, heartbeats, retries and the loops that run fits.

Fits live in the ``fits`` table, so queued jobs survive a restart and any
number of processes can share the queue. See :mod:`app.jobs.queue` for the
claim protocol, :mod:`app.jobs.runner` for how a fit runs and
:mod:`app.jobs.isolation` for the child process of the in-process runner.

The names below are imported on first use, so that importing
:mod:`app.jobs.isolation` in the fit child process does not load numpy before
the child has lowered its priority.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FitQueueSettings": "app.jobs.config",
    "queue_settings": "app.jobs.config",
    "InProcessRunner": "app.jobs.runner",
    "run_pending": "app.jobs.runner",
    "run_worker": "app.jobs.runner",
    "start_in_process_runner": "app.jobs.runner",
    "worker_loop": "app.jobs.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'app.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
