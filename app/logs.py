"""Logging set-up: plain or JSON lines, with the study and fit ids of the context.

The ids live in context variables. The API binds ``study_id`` for each request
whose path names a study, and the fit runner binds ``study_id`` and ``fit_id``
around each fit with :func:`log_context`. :class:`ContextFilter` copies them
onto every record, so a line logged deep inside a service carries them without
passing ids around.

Nothing here logs request bodies, feature vectors or keys; callers must not
put them in messages either.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

study_id_var: ContextVar[str | None] = ContextVar("prefbudget_study_id", default=None)
fit_id_var: ContextVar[str | None] = ContextVar("prefbudget_fit_id", default=None)

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s"


@contextmanager
def log_context(
    *, study_id: str | None = None, fit_id: str | None = None
) -> Iterator[None]:
    """Bind ``study_id`` and ``fit_id`` to log records emitted inside the block."""
    tokens = []
    if study_id is not None:
        tokens.append((study_id_var, study_id_var.set(study_id)))
    if fit_id is not None:
        tokens.append((fit_id_var, fit_id_var.set(fit_id)))
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class ContextFilter(logging.Filter):
    """Add ``study_id``, ``fit_id`` and a ready-made ``context`` suffix to records.

    ``context`` is `` study_id=... fit_id=...`` with only the ids that are
    set, or an empty string, for the plain format.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        study_id = study_id_var.get()
        fit_id = fit_id_var.get()
        record.study_id = study_id
        record.fit_id = fit_id
        parts = []
        if study_id is not None:
            parts.append(f" study_id={study_id}")
        if fit_id is not None:
            parts.append(f" fit_id={fit_id}")
        record.context = "".join(parts)
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message and ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("study_id", "fit_id"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Stream handler that writes to whatever ``sys.stderr`` is at emit time.

    Test runners and embedding programs replace ``sys.stderr``; a handler that
    kept the object from configuration time would write to a closed stream.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(level: str = "INFO", log_format: str = "plain") -> None:
    """Send every log record to standard error in ``log_format`` at ``level``.

    Replaces the root logger's handlers, so calling it twice does not double
    the output. Uvicorn's loggers propagate to the root and so share the
    format.
    """
    handler = _StderrHandler()
    handler.addFilter(ContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif log_format == "plain":
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    else:
        raise ValueError(f"unknown log format {log_format!r}; expected plain or json")

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
