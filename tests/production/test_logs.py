"""Log lines carry the study and fit ids of their context, in plain or JSON form."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.logs import (
    PLAIN_FORMAT,
    ContextFilter,
    JsonFormatter,
    configure_logging,
    log_context,
)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.production.logs")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_json_lines_carry_ids(captured) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())

    with log_context(study_id="study-1", fit_id="fit-9"):
        logger.info("fit.finished status=%s", "succeeded")
    logger.info("outside")

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "fit.finished status=succeeded"
    assert first["study_id"] == "study-1"
    assert first["fit_id"] == "fit-9"
    assert first["level"] == "INFO"
    assert first["logger"] == "tests.production.logs"
    assert "study_id" not in second
    assert "fit_id" not in second


def test_plain_lines_append_ids(captured) -> None:
    logger, stream, handler = captured
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT))

    with log_context(study_id="study-1"):
        logger.warning("quota.read")
    logger.warning("no.context")

    first, second = stream.getvalue().splitlines()
    assert first.endswith("WARNING tests.production.logs quota.read study_id=study-1")
    assert second.endswith("no.context")


def test_nested_contexts_restore_outer_ids(captured) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())

    with log_context(study_id="outer"):
        with log_context(study_id="inner", fit_id="f"):
            logger.info("a")
        logger.info("b")

    inner, outer = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inner["study_id"] == "inner"
    assert outer["study_id"] == "outer"
    assert "fit_id" not in outer


def test_json_exception_is_one_line(captured) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())

    try:
        raise RuntimeError("solver blew up")
    except RuntimeError:
        logger.exception("fit.failed")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "RuntimeError: solver blew up" in json.loads(lines[0])["exception"]


def test_configure_logging_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("INFO", "xml")


def test_configure_logging_replaces_handlers() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("DEBUG", "json")
        configure_logging("DEBUG", "json")
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
