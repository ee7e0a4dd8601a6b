"""Error handling of the fit loops: one log line per failure and exponential backoff."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from app.jobs import runner
from app.jobs.config import FitQueueSettings


class RecordingEvent:
    """Fake stop event: records each ``wait`` timeout, is set after ``waits`` calls."""

    def __init__(self, waits: int) -> None:
        self.timeouts: list[float] = []
        self._waits = waits

    def is_set(self) -> bool:
        return len(self.timeouts) >= self._waits

    def wait(self, timeout: float) -> bool:
        self.timeouts.append(timeout)
        return self.is_set()

    def clear(self) -> None:
        pass


def missing_database_error() -> OperationalError:
    return OperationalError(
        "SELECT 1", {}, Exception('database "nonexistent_db_x" does not exist')
    )


def failing_factory():
    raise missing_database_error()


def loop_errors(caplog) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.getMessage().startswith("fit.worker_loop_error ")
    ]


def test_worker_loop_backs_off_and_caps(caplog):
    queue = FitQueueSettings(fit_poll_seconds=0.5)
    event = RecordingEvent(waits=8)
    with caplog.at_level(logging.INFO, logger="app.jobs.runner"):
        runner.worker_loop(failing_factory, queue, event, "worker:test")

    assert event.timeouts == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    errors = loop_errors(caplog)
    assert len(errors) == 8
    for failures, record in enumerate(errors, start=1):
        message = record.getMessage()
        assert record.levelno == logging.ERROR
        assert "\n" not in message
        assert f"failures={failures} " in message
        assert (
            'error=OperationalError: database "nonexistent_db_x" does not exist'
            in message
        )
        assert f"retrying in {event.timeouts[failures - 1]:.1f} s" in message
    assert errors[0].exc_info is not None
    assert all(record.exc_info is None for record in errors[1:])


def test_worker_loop_traceback_at_debug(caplog):
    queue = FitQueueSettings(fit_poll_seconds=0.5)
    event = RecordingEvent(waits=3)
    with caplog.at_level(logging.DEBUG, logger="app.jobs.runner"):
        runner.worker_loop(failing_factory, queue, event, "worker:test")

    tracebacks = [
        record
        for record in caplog.records
        if record.levelno == logging.DEBUG and record.exc_info is not None
    ]
    assert len(tracebacks) == 2


def test_worker_loop_resets_after_success(caplog, monkeypatch):
    # None: the iteration succeeds; an exception: it fails.
    script = [missing_database_error(), missing_database_error(), None, None]
    script += [missing_database_error()]

    def scripted_run_pending(*_args, **_kwargs) -> int:
        outcome = script.pop(0)
        if outcome is not None:
            raise outcome
        return 0

    monkeypatch.setattr(runner, "run_pending", scripted_run_pending)
    queue = FitQueueSettings(fit_poll_seconds=0.5)
    event = RecordingEvent(waits=5)
    with caplog.at_level(logging.INFO, logger="app.jobs.runner"):
        runner.worker_loop(None, queue, event, "worker:test")

    assert event.timeouts == [1.0, 2.0, 0.5, 0.5, 1.0]
    recovered = [
        record
        for record in caplog.records
        if record.getMessage().startswith("fit.worker_loop_recovered ")
    ]
    assert len(recovered) == 1
    assert "failures=2" in recovered[0].getMessage()
    errors = loop_errors(caplog)
    assert [record.exc_info is not None for record in errors] == [True, False, True]


@pytest.mark.parametrize(
    ("poll_seconds", "expected"),
    [(0.5, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]), (45.0, [45.0, 45.0])],
)
def test_backoff_cap(poll_seconds, expected):
    backoff = runner.LoopBackoff("fit.test_loop", "worker:test", poll_seconds)
    error = missing_database_error()
    delays = [backoff.failed(error) for _ in expected]
    assert delays == expected
    assert backoff.succeeded() == poll_seconds


def test_in_process_runner_backs_off(caplog):
    queue = FitQueueSettings(fit_poll_seconds=0.5, fit_isolation="thread")
    fit_runner = runner.InProcessRunner(failing_factory, queue)
    # The runner waits on its wake event and checks its stop event.
    event = RecordingEvent(waits=4)
    fit_runner._wake = event
    fit_runner._stop = event
    with caplog.at_level(logging.INFO, logger="app.jobs.runner"):
        fit_runner._run()

    assert event.timeouts == [1.0, 2.0, 4.0, 8.0]
    errors = [
        record
        for record in caplog.records
        if record.getMessage().startswith("fit.runner_loop_error ")
    ]
    assert len(errors) == 4
    assert errors[0].exc_info is not None
    assert all(record.exc_info is None for record in errors[1:])
