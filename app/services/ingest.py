"""Validating and storing comparisons: JSON batches and bulk imports.

Every request is all-or-nothing. Rows are first turned into arrays
(:class:`PreparedRows`) and checked; errors are collected for every bad row
and raised together as one 422. Valid rows are inserted chunk by chunk inside
the request's transaction (:func:`app.db.queries.insert_comparisons`: ``COPY``
on PostgreSQL, a driver-level executemany on SQLite), so a later error (a bad
row further down an import file, a 409) rolls back everything.

JSON batches first try :func:`parse_batch_fast`, which turns a valid body into
arrays without building pydantic objects. A body it does not accept goes
through the validating path, which reports every bad row.

Idempotency: a row with a client ``id`` whose id is already stored in the
study is a duplicate when its content hash matches and a conflict (409,
nothing stored) when it does not. The study row is locked for the duration of
the request (``FOR UPDATE`` on PostgreSQL, the database write lock on SQLite),
so concurrent requests to one study are serialised. The unique constraint on
``(study_id, client_id)``, with a savepoint and retry, is a second line of
defence.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import pydantic_core
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import queries
from app.db.codec import decode_rows, encode_rows
from app.db.models import Comparison, Study
from app.problems import (
    INVALID_JSON_DETAIL,
    BadRequest,
    Conflict,
    ContentTooLarge,
    FieldError,
    ValidationProblem,
)
from app.schemas.common import MAX_ABS_FEATURE
from app.schemas.comparisons import (
    ComparisonOut,
    ComparisonPage,
    batch_adapter,
    comparison_adapter,
    comparison_list_adapter,
)

logger = logging.getLogger(__name__)

INSERT_ATTEMPTS = 3
MAX_LISTED_CONFLICTS = 100

TOO_LARGE_REASON = (
    f"contains a value above the maximum of {MAX_ABS_FEATURE:g} in absolute value"
)
DIFFERENCE_TOO_LARGE_REASON = (
    f"first - second has a value above the maximum of {MAX_ABS_FEATURE:g} in "
    "absolute value"
)


def after_ingest(session: Session, study: Study) -> None:
    """Extension point run after comparisons were inserted, in the same transaction.

    Called once per successful batch or import, after every row was inserted
    and while the study row is still locked, so whatever it writes commits or
    rolls back together with the comparisons. The fit scheduler hooks in here
    to queue a fit when the current phase's quotas are met.
    """
    from app.services.phases import on_labels_stored

    logger.debug("ingest.after study_id=%s phase=%s", study.id, study.phase)
    on_labels_stored(session, study)


@dataclass
class PreparedRows:
    """Validated rows of one chunk as arrays, ready to insert.

    ``features`` has shape ``(n, d)``; ``task_ids``, ``labels``, ``client_ids``
    and ``indices`` (row numbers in the request, for error messages) have
    length ``n``.
    """

    indices: list[int]
    task_ids: list[int]
    task_names: list[str]
    client_ids: list[str | None]
    features: np.ndarray
    labels: np.ndarray


@dataclass
class IngestCounts:
    """Running totals of one request."""

    inserted: int = 0
    duplicates: int = 0


@dataclass
class ErrorCollector:
    """Collects row errors up to a listing limit while counting all of them."""

    limit: int
    errors: list[FieldError] = field(default_factory=list)
    total: int = 0

    def add(self, index: int | None, field_name: str, reason: str) -> None:
        self.total += 1
        if len(self.errors) < self.limit:
            self.errors.append(FieldError(index, field_name, reason))

    def extend(self, errors: list[FieldError]) -> None:
        for error in errors:
            self.add(error.index, error.field, error.reason)

    def raise_if_any(self, what: str) -> None:
        if self.total:
            self.errors.sort(key=lambda error: (error.index is None, error.index or 0))
            raise ValidationProblem(
                f"{self.total} invalid value(s) in {what}; nothing was stored",
                self.errors,
                total_errors=self.total,
            )


def _task_lookup(study: Study) -> dict[str, int]:
    return {task.name: task.id for task in study.tasks}


def _vector_reason(values: Any, dimension: int) -> str | None:
    if len(values) != dimension:
        return f"expected {dimension} values, got {len(values)}"
    return None


def _bad_vector_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return masks of the rows with NaN or infinity and of the finite rows too large.

    A finite row is too large when one of its values exceeds
    :data:`MAX_ABS_FEATURE` in absolute value.
    """
    finite = np.isfinite(matrix).all(axis=1)
    too_large = finite & ~(np.abs(matrix) <= MAX_ABS_FEATURE).all(axis=1)
    return ~finite, too_large


def _within_bound(matrix: np.ndarray) -> bool:
    """Return whether every value is finite and within +-MAX_ABS_FEATURE."""
    return bool((np.abs(matrix) <= MAX_ABS_FEATURE).all())


def prepare_dict_rows(
    study: Study,
    rows: list[dict[str, Any]],
    indices: list[int],
    errors: ErrorCollector,
) -> PreparedRows:
    """Check rows already validated by the ``ComparisonIn`` schema.

    ``indices[i]`` is the position of ``rows[i]`` in the request (batch row or
    import line), used in error messages.

    Checks what the schema cannot: the task exists, exactly one of
    ``features`` or ``first`` and ``second`` is given, vectors have length d
    and finite entries of at most :data:`MAX_ABS_FEATURE` in absolute value
    (for ``first`` and ``second``, their difference as well). Bad rows go to
    ``errors``; the good ones are returned.
    """
    dimension = study.dimension
    tasks = _task_lookup(study)
    good: list[int] = []
    vectors: list[Any] = []
    pairs: list[tuple[int, Any, Any]] = []

    for offset, row in enumerate(rows):
        index = indices[offset]
        bad = False
        if row["task"] not in tasks:
            errors.add(index, "task", f"unknown task '{row['task']}'")
            bad = True
        features = row.get("features")
        first = row.get("first")
        second = row.get("second")
        if features is not None:
            if first is not None or second is not None:
                errors.add(
                    index,
                    "features",
                    "give either features or first and second, not both",
                )
                continue
            reason = _vector_reason(features, dimension)
            if reason:
                errors.add(index, "features", reason)
                continue
            if not bad:
                good.append(offset)
                vectors.append(features)
            continue
        if first is None and second is None:
            errors.add(index, "features", "missing: give features, or first and second")
            continue
        for name, values in (("first", first), ("second", second)):
            if values is None:
                errors.add(index, name, "missing: first and second must both be given")
                bad = True
            elif reason := _vector_reason(values, dimension):
                errors.add(index, name, reason)
                bad = True
        if not bad:
            good.append(offset)
            vectors.append(None)
            pairs.append((len(vectors) - 1, first, second))

    # Build the (n, d) matrix; rows given as first and second get the difference.
    matrix = np.empty((len(vectors), dimension), dtype=np.float64)
    plain = [position for position, vector in enumerate(vectors) if vector is not None]
    if plain:
        matrix[plain] = np.array([vectors[p] for p in plain], dtype=np.float64)
    reported: set[int] = set()
    if pairs:
        positions = [p for p, _, _ in pairs]
        firsts = np.array([f for _, f, _ in pairs], dtype=np.float64)
        seconds = np.array([s for _, _, s in pairs], dtype=np.float64)
        for name, array in (("first", firsts), ("second", seconds)):
            non_finite, too_large = _bad_vector_rows(array)
            for bad_rows, reason in (
                (non_finite, "contains NaN or infinity"),
                (too_large, TOO_LARGE_REASON),
            ):
                for bad_row in np.flatnonzero(bad_rows):
                    position = positions[bad_row]
                    reported.add(position)
                    errors.add(indices[good[position]], name, reason)
        with np.errstate(over="ignore", invalid="ignore"):
            matrix[positions] = firsts - seconds

    # Rows with NaN, infinity or a value over the bound. A row given as first
    # and second whose vectors passed can only fail by their difference, and
    # one whose vectors failed is dropped even when the difference is fine.
    non_finite, too_large = _bad_vector_rows(matrix)
    keep = ~(non_finite | too_large)
    keep[sorted(reported)] = False
    for position in np.flatnonzero(~keep):
        if position in reported:
            continue
        if vectors[position] is None:
            reason = DIFFERENCE_TOO_LARGE_REASON
        elif non_finite[position]:
            reason = "contains NaN or infinity"
        else:
            reason = TOO_LARGE_REASON
        errors.add(indices[good[position]], "features", reason)

    kept = [good[position] for position in np.flatnonzero(keep)]
    return PreparedRows(
        indices=[indices[offset] for offset in kept],
        task_ids=[tasks[rows[offset]["task"]] for offset in kept],
        task_names=[rows[offset]["task"] for offset in kept],
        client_ids=[rows[offset].get("id") for offset in kept],
        features=matrix[keep],
        labels=np.array([rows[offset]["label"] for offset in kept], dtype=np.float64),
    )


def _classify(
    session: Session,
    study: Study,
    rows: PreparedRows,
    blobs: list[bytes],
    hashes: list[str],
) -> tuple[list[int], int]:
    """Split rows into those to insert and duplicates; raise 409 on conflicts."""
    conflicts: list[FieldError] = []
    duplicates = 0
    keep: list[int] = []
    first_seen: dict[str, int] = {}

    for position, client_id in enumerate(rows.client_ids):
        if client_id is None:
            keep.append(position)
            continue
        earlier = first_seen.get(client_id)
        if earlier is None:
            first_seen[client_id] = position
            keep.append(position)
        elif hashes[earlier] == hashes[position]:
            duplicates += 1
        else:
            conflicts.append(
                FieldError(
                    rows.indices[position],
                    "id",
                    f"id '{client_id}' repeats row {rows.indices[earlier]} "
                    "with other content",
                )
            )

    stored = queries.stored_hashes(session, study.id, first_seen)
    if stored:
        still_new: list[int] = []
        for position in keep:
            client_id = rows.client_ids[position]
            if client_id is None or client_id not in stored:
                still_new.append(position)
            elif stored[client_id] == hashes[position]:
                duplicates += 1
            else:
                conflicts.append(
                    FieldError(
                        rows.indices[position],
                        "id",
                        f"id '{client_id}' is already stored with other content",
                    )
                )
        keep = still_new

    if conflicts:
        logger.info(
            "ingest.conflict study_id=%s conflicting_ids=%d", study.id, len(conflicts)
        )
        conflicts.sort(key=lambda error: error.index or 0)
        raise Conflict(
            f"{len(conflicts)} comparison id(s) are already used with other content; "
            "nothing was stored",
            errors=conflicts[:MAX_LISTED_CONFLICTS],
        )
    return keep, duplicates


def store_rows(session: Session, study: Study, rows: PreparedRows) -> IngestCounts:
    """Insert prepared rows with the study's current phase, skipping duplicates.

    Raises :class:`Conflict` when a client id is stored with other content.
    """
    if not rows.indices:
        return IngestCounts()
    blobs, hashes = encode_rows(rows.task_names, rows.features, rows.labels)
    # -0.0 becomes 0.0, as in the blobs and hashes from encode_rows.
    labels = (rows.labels + 0.0).tolist()
    study_id, phase = study.id, study.phase
    for attempt in range(1, INSERT_ATTEMPTS + 1):
        keep, duplicates = _classify(session, study, rows, blobs, hashes)
        if len(keep) == len(labels):
            values = list(
                zip(
                    repeat(study_id),
                    rows.task_ids,
                    rows.client_ids,
                    blobs,
                    labels,
                    repeat(phase),
                    hashes,
                )
            )
        else:
            values = [
                (
                    study_id,
                    rows.task_ids[p],
                    rows.client_ids[p],
                    blobs[p],
                    labels[p],
                    phase,
                    hashes[p],
                )
                for p in keep
            ]
        if not values:
            return IngestCounts(0, duplicates)
        if not any(rows.client_ids):
            # Without client ids the unique constraint cannot fire (NULLs never
            # collide), so the savepoint for the retry below is not needed.
            _insert_and_count(session, study_id, phase, values)
            return IngestCounts(len(values), duplicates)
        try:
            with session.begin_nested():
                _insert_and_count(session, study_id, phase, values)
        except IntegrityError:
            # Another transaction stored one of these client ids after the
            # lookup above; classify again against what it committed.
            logger.warning(
                "ingest.retry study_id=%s attempt=%d reason=unique_violation",
                study.id,
                attempt,
            )
            if attempt == INSERT_ATTEMPTS:
                raise
            continue
        return IngestCounts(len(values), duplicates)
    raise AssertionError("unreachable")


def _insert_and_count(
    session: Session, study_id: str, phase: str, values: list[tuple[Any, ...]]
) -> None:
    """Insert comparison rows and add them to the study's label counts."""
    queries.insert_comparisons(session, values)
    # Every row of one request has the same phase; the task id is column 1.
    per_task = Counter(row[1] for row in values)
    queries.add_label_counts(session, study_id, phase, per_task)


def check_batch_size(count: int, max_rows: int) -> None:
    """Reject an empty batch (422) or one over ``max_rows`` (413)."""

    if count == 0:
        raise ValidationProblem(
            "the batch is empty",
            [FieldError(None, "comparisons", "at least one comparison is required")],
        )
    if count > max_rows:
        raise ContentTooLarge(
            f"the batch has {count} comparisons; at most {max_rows} are accepted "
            "per request, use the bulk import for more"
        )


def ingest_batch(
    session: Session,
    study: Study,
    rows: list[dict[str, Any]],
    indices: list[int],
    *,
    schema_errors: list[FieldError] | None = None,
    max_reported_errors: int = 1000,
) -> IngestCounts:
    """Validate and store one JSON batch atomically.

    ``rows`` are the rows that passed the ``ComparisonIn`` schema and
    ``indices`` their positions in the batch; ``schema_errors`` are the
    errors of the rows that failed it. Any error raises one 422 listing all.
    """
    errors = ErrorCollector(max_reported_errors)
    errors.extend(schema_errors or [])
    prepared = prepare_dict_rows(study, rows, indices, errors)
    errors.raise_if_any("the batch")
    return _store_batch(session, study, prepared)


def _store_batch(
    session: Session, study: Study, prepared: PreparedRows
) -> IngestCounts:
    counts = store_rows(session, study, prepared)
    after_ingest(session, study)
    logger.info(
        "ingest.batch study_id=%s phase=%s inserted=%d duplicates=%d",
        study.id,
        study.phase,
        counts.inserted,
        counts.duplicates,
    )
    return counts


# Pydantic error types of a label outside [0, 1]. They get the same reason as
# the Parquet import, so every ingest path words this error alike.
LABEL_RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal"})


def label_range_reason(value: float) -> str:
    """Return the error reason for a finite label outside [0, 1]."""
    return f"must be in [0, 1], got {float(value)!r}"


def schema_field_errors(
    exc: ValidationError,
    *,
    row_position: int | None,
    index_map: list[int] | None = None,
) -> list[FieldError]:
    """Turn pydantic errors into row errors.

    ``row_position`` is where the row number sits in each error location (1
    for ``("comparisons", i, ...)``), or None when the whole input is one row
    whose number is ``index_map[0]``.
    """
    converted: list[FieldError] = []
    for error in exc.errors(include_url=False):
        location = list(error["loc"])
        index: int | None
        if row_position is None:
            index = index_map[0] if index_map else None
        elif len(location) > row_position and isinstance(location[row_position], int):
            index = location[row_position]
            location = location[row_position + 1 :]
        else:
            index = None
        field_name = ".".join(str(part) for part in location) or "body"
        reason = error["msg"]
        if field_name == "label" and error["type"] in LABEL_RANGE_ERRORS:
            reason = label_range_reason(error["input"])
        converted.append(FieldError(index, field_name, reason))
    return converted


# Bulk import ----------------------------------------------------------------

JSONL_MEDIA_TYPES = frozenset(
    {"application/x-ndjson", "application/jsonl", "application/x-jsonlines"}
)
PARQUET_MEDIA_TYPES = frozenset(
    {"application/vnd.apache.parquet", "application/x-parquet"}
)
PARQUET_COLUMNS = frozenset({"id", "task", "features", "first", "second", "label"})


def import_file(
    session: Session,
    study: Study,
    path: str,
    file_format: str,
    *,
    chunk_rows: int,
    max_reported_errors: int,
) -> IngestCounts:
    """Validate and store a JSON Lines or Parquet file in one transaction.

    The file is read in chunks of ``chunk_rows`` rows, and valid chunks are
    inserted as they come. After the first error nothing more is inserted,
    but the rest of the file is still checked so that one 422 lists every
    error. The request's rollback removes the rows inserted before it.
    """
    errors = ErrorCollector(max_reported_errors)
    counts = IngestCounts()
    rows_seen = 0
    if file_format == "parquet":
        chunks = _parquet_chunks(study, path, chunk_rows, errors)
    else:
        chunks = _jsonl_chunks(study, path, chunk_rows, errors)

    for rows_in_chunk, prepared in chunks:
        rows_seen += rows_in_chunk
        if errors.total:
            continue
        chunk_counts = store_rows(session, study, prepared)
        counts.inserted += chunk_counts.inserted
        counts.duplicates += chunk_counts.duplicates

    if rows_seen == 0 and not errors.total:
        errors.add(None, "body", "the file contains no comparisons")
    errors.raise_if_any("the import file")

    after_ingest(session, study)
    logger.info(
        "ingest.import study_id=%s format=%s phase=%s rows=%d inserted=%d "
        "duplicates=%d",
        study.id,
        file_format,
        study.phase,
        rows_seen,
        counts.inserted,
        counts.duplicates,
    )
    return counts


def _jsonl_chunks(
    study: Study, path: str, chunk_rows: int, errors: ErrorCollector
) -> Iterator[tuple[int, PreparedRows]]:
    """Yield prepared chunks of a JSON Lines file; rows are numbered by line."""
    lines: list[bytes] = []
    numbers: list[int] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            lines.append(line)
            numbers.append(number)
            if len(lines) == chunk_rows:
                yield len(lines), _prepare_jsonl_chunk(study, lines, numbers, errors)
                lines, numbers = [], []
    if lines:
        yield len(lines), _prepare_jsonl_chunk(study, lines, numbers, errors)


def _prepare_jsonl_chunk(
    study: Study, lines: list[bytes], numbers: list[int], errors: ErrorCollector
) -> PreparedRows:
    # Fast path: the whole chunk as one JSON array, parsed and checked in Rust.
    try:
        rows = comparison_list_adapter.validate_json(b"[" + b",".join(lines) + b"]")
        return prepare_dict_rows(study, rows, numbers, errors)  # type: ignore[arg-type]
    except ValidationError:
        pass

    # Slow path, only for a chunk with errors: line by line, for exact messages.
    good_rows: list[dict[str, Any]] = []
    good_numbers: list[int] = []
    for line, number in zip(lines, numbers, strict=True):
        try:
            good_rows.append(comparison_adapter.validate_json(line))  # type: ignore[arg-type]
            good_numbers.append(number)
        except ValidationError as exc:
            errors.extend(
                schema_field_errors(exc, row_position=None, index_map=[number])
            )
    return prepare_dict_rows(study, good_rows, good_numbers, errors)


def _parquet_chunks(
    study: Study, path: str, chunk_rows: int, errors: ErrorCollector
) -> Iterator[tuple[int, PreparedRows]]:
    """Yield prepared chunks of a Parquet file, read one record batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # pyarrow's default pre-buffering keeps every row group read so far in
        # memory until the file is closed, so memory would grow with the file.
        # A buffered stream reads pages as needed and keeps the import's
        # arrow memory near one record batch.
        parquet_file = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationProblem(
            "the body is not a readable Parquet file",
            [FieldError(None, "body", str(exc))],
        ) from exc

    columns = set(parquet_file.schema_arrow.names)
    column_errors: list[FieldError] = []
    for name in sorted(columns - PARQUET_COLUMNS):
        column_errors.append(
            FieldError(
                None, name, f"unknown column; allowed: {sorted(PARQUET_COLUMNS)}"
            )
        )
    for name in ("task", "label"):
        if name not in columns:
            column_errors.append(FieldError(None, name, "missing column"))
    if "features" not in columns and not {"first", "second"} <= columns:
        column_errors.append(
            FieldError(
                None, "features", "missing column: give features, or first and second"
            )
        )
    if not column_errors:
        column_errors = _parquet_type_errors(parquet_file.schema_arrow)
    if column_errors:
        raise ValidationProblem("the Parquet file has the wrong columns", column_errors)

    start = 0
    for batch in parquet_file.iter_batches(batch_size=chunk_rows):
        yield batch.num_rows, _prepare_arrow_batch(study, batch, start, errors)
        start += batch.num_rows


def _is_arrow_string(data_type: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _is_arrow_number(data_type: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_floating(data_type) or pa.types.is_integer(data_type)


def _parquet_type_errors(schema: Any) -> list[FieldError]:
    """Check the column types of a Parquet file, as the JSON schema checks values.

    ``id`` and ``task`` take strings (dictionary-encoded strings too), ``label``
    takes floating or integer numbers, and ``features``, ``first`` and
    ``second`` take lists of them. A column of nulls only (arrow type ``null``)
    is accepted and reported row by row as missing, or stored without an id.
    """
    import pyarrow as pa

    list_types = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    errors: list[FieldError] = []
    for name in schema.names:
        data_type = schema.field(name).type
        if pa.types.is_null(data_type):
            continue
        if name in ("id", "task"):
            valid = _is_arrow_string(data_type)
            expected = "strings"
        elif name == "label":
            valid = _is_arrow_number(data_type)
            expected = "floating or integer numbers"
        else:
            valid = any(check(data_type) for check in list_types) and _is_arrow_number(
                data_type.value_type
            )
            expected = "lists of floating or integer numbers"
        if not valid:
            errors.append(
                FieldError(
                    None, name, f"column must contain {expected}, got {data_type}"
                )
            )
    return errors


def _arrow_vectors(
    column: Any, name: str, dimension: int, start: int, errors: ErrorCollector
) -> tuple[np.ndarray, np.ndarray]:
    """Convert a list column to an ``(n, d)`` array and a mask of bad rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    count = len(column)
    matrix = np.full((count, dimension), np.nan)
    bad = np.zeros(count, dtype=bool)
    list_types = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if not any(check(column.type) for check in list_types) or not (
        pa.types.is_floating(column.type.value_type)
        or pa.types.is_integer(column.type.value_type)
    ):
        errors.add(None, name, f"expected a list of numbers, got {column.type}")
        bad[:] = True
        return matrix, bad

    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    for row in np.flatnonzero(nulls):
        errors.add(start + int(row), name, "missing")
    wrong = ~nulls & (lengths != dimension)
    for row in np.flatnonzero(wrong):
        errors.add(
            start + int(row),
            name,
            f"expected {dimension} values, got {int(lengths[row])}",
        )
    bad = nulls | wrong

    valid = ~bad
    if valid.any():
        values = column.filter(pa.array(valid)).flatten()
        matrix[valid] = (
            values.cast(pa.float64())
            .to_numpy(zero_copy_only=False)
            .reshape(-1, dimension)
        )
    return matrix, bad


def _prepare_arrow_batch(
    study: Study, batch: Any, start: int, errors: ErrorCollector
) -> PreparedRows:
    """Check one Parquet record batch with vectorised arrow and numpy operations."""
    import pyarrow as pa
    import pyarrow.compute as pc

    count = batch.num_rows
    dimension = study.dimension
    schema_names = batch.schema.names
    bad = np.zeros(count, dtype=bool)

    # Tasks: map names to positions in the study's task list.
    task_names = [task.name for task in study.tasks]
    task_column = batch.column("task")
    if not (
        pa.types.is_string(task_column.type)
        or pa.types.is_large_string(task_column.type)
    ):
        task_column = task_column.cast(pa.string())
    positions = pc.index_in(task_column, value_set=pa.array(task_names, pa.string()))
    unknown = positions.is_null().to_numpy(zero_copy_only=False)
    for row in np.flatnonzero(unknown):
        value = task_column[int(row)].as_py()
        reason = "missing" if value is None else f"unknown task '{value}'"
        errors.add(start + int(row), "task", reason)
    bad |= unknown
    task_positions = positions.fill_null(0).to_numpy(zero_copy_only=False)

    # Labels: present, finite and in [0, 1].
    label_column = batch.column("label")
    if not (
        pa.types.is_floating(label_column.type)
        or pa.types.is_integer(label_column.type)
    ):
        errors.add(None, "label", f"expected numbers, got {label_column.type}")
        labels = np.full(count, np.nan)
        bad[:] = True
    else:
        labels = label_column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            out_of_range = ~((labels >= 0.0) & (labels <= 1.0))
        for row in np.flatnonzero(out_of_range):
            value = labels[row]
            reason = (
                "missing or NaN"
                if np.isnan(value)
                else label_range_reason(value)
            )
            errors.add(start + int(row), "label", reason)
        bad |= out_of_range

    # Client ids: optional strings of 1 to 200 characters without NUL.
    client_ids: list[str | None] = [None] * count
    if "id" in schema_names:
        id_column = batch.column("id")
        if not (
            pa.types.is_string(id_column.type)
            or pa.types.is_large_string(id_column.type)
        ):
            id_column = id_column.cast(pa.string())
        client_ids = id_column.to_pylist()
        for row, client_id in enumerate(client_ids):
            if client_id is None:
                continue
            if not 1 <= len(client_id) <= 200:
                errors.add(start + row, "id", "must have 1 to 200 characters")
                bad[row] = True
            elif "\x00" in client_id:
                errors.add(
                    start + row, "id", "must not contain the NUL character (U+0000)"
                )
                bad[row] = True

    # Features, or the difference first - second: finite and within the bound.
    if "features" in schema_names:
        names = ["features"]
    else:
        names = ["first", "second"]
    parts = []
    for name in names:
        matrix, bad_part = _arrow_vectors(
            batch.column(name), name, dimension, start, errors
        )
        non_finite, too_large = _bad_vector_rows(matrix)
        for rows, reason in (
            (~bad_part & non_finite, "contains NaN, infinity or null"),
            (~bad_part & too_large, TOO_LARGE_REASON),
        ):
            for row in np.flatnonzero(rows):
                errors.add(start + int(row), name, reason)
        bad |= bad_part | non_finite | too_large
        parts.append(matrix)
    if len(parts) == 1:
        features = parts[0]
    else:
        with np.errstate(invalid="ignore"):
            features = parts[0] - parts[1]
        _, difference_too_large = _bad_vector_rows(features)
        difference_too_large &= ~bad
        for row in np.flatnonzero(difference_too_large):
            errors.add(start + int(row), "features", DIFFERENCE_TOO_LARGE_REASON)
        bad |= difference_too_large

    keep = np.flatnonzero(~bad)
    task_ids = [task.id for task in study.tasks]
    return PreparedRows(
        indices=(keep + start).tolist(),
        task_ids=[task_ids[p] for p in task_positions[keep]],
        task_names=[task_names[p] for p in task_positions[keep]],
        client_ids=[client_ids[p] for p in keep],
        features=features[keep],
        labels=labels[keep],
    )


# JSON batches -----------------------------------------------------------------


def _json_error_reason(exc: ValueError) -> str:
    """Describe why ``json.loads`` failed, in terms a client can act on."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at position {exc.pos}"
    if isinstance(exc, UnicodeDecodeError):
        return f"the body is not valid UTF-8 (byte {exc.start})"
    if "integer string conversion" in str(exc):
        # Python's own message suggests sys.set_int_max_str_digits.
        return "a number is too large: integers may have at most 4300 digits"
    return str(exc)


def parse_batch(
    body: bytes, max_rows: int
) -> tuple[list[dict[str, Any]], list[int], list[FieldError]]:
    """Parse a JSON batch body into schema-valid rows, their positions and errors.

    The common case (a valid body) is parsed and checked in one pass by
    pydantic. Otherwise the body is parsed again row by row, so that the
    422 lists the schema errors of every row, and the remaining rows still
    get the checks of :func:`prepare_dict_rows`.
    """
    try:
        batch = batch_adapter.validate_json(body)
    except ValidationError:
        pass
    else:
        rows: list[dict[str, Any]] = batch["comparisons"]  # type: ignore[assignment]
        check_batch_size(len(rows), max_rows)
        return rows, list(range(len(rows))), []

    try:
        document = json.loads(body)
    except RecursionError as exc:
        # json.loads recurses once per nesting level, so a body such as
        # 100,000 "[" exhausts the interpreter's recursion limit.
        raise ValidationProblem(
            INVALID_JSON_DETAIL,
            [FieldError(None, "body", "the JSON is nested too deeply")],
        ) from exc
    except ValueError as exc:
        raise ValidationProblem(
            INVALID_JSON_DETAIL, [FieldError(None, "body", _json_error_reason(exc))]
        ) from exc
    if not isinstance(document, dict):
        raise ValidationProblem(
            "the body must be a JSON object",
            [FieldError(None, "body", 'expected {"comparisons": [...]}')],
        )
    errors = [
        FieldError(None, key, "unknown field")
        for key in document
        if key != "comparisons"
    ]
    items = document.get("comparisons")
    if not isinstance(items, list):
        reason = "missing" if items is None else "must be a list of comparisons"
        raise ValidationProblem(
            "the batch is invalid", [*errors, FieldError(None, "comparisons", reason)]
        )
    if not items and errors:
        empty = FieldError(None, "comparisons", "at least one comparison is required")
        raise ValidationProblem("the batch is invalid", [*errors, empty])
    check_batch_size(len(items), max_rows)

    good_rows: list[dict[str, Any]] = []
    good_indices: list[int] = []
    for index, item in enumerate(items):
        try:
            good_rows.append(comparison_adapter.validate_python(item))  # type: ignore[arg-type]
            good_indices.append(index)
        except ValidationError as exc:
            errors.extend(
                schema_field_errors(exc, row_position=None, index_map=[index])
            )
    return good_rows, good_indices, errors


# JSON batches: fast path -------------------------------------------------------

ROW_KEYS = frozenset({"id", "task", "features", "first", "second", "label"})


@dataclass
class ParsedBatch:
    """A batch body decoded without schema validation, not yet checked.

    ``vectors`` has shape ``(n, d')``: the ``features`` of every row, or the
    ``first`` vectors when every row gives ``first`` and ``second`` (then
    ``seconds`` has the same shape). ``d'`` is checked against the study later.
    """

    task_names: list[str]
    client_ids: list[str | None]
    labels: np.ndarray
    vectors: np.ndarray
    seconds: np.ndarray | None


def _number_matrix(lists: list[Any]) -> np.ndarray | None:
    """Stack lists of JSON numbers as float64, or None for anything else."""
    try:
        matrix = np.array(lists)
    except ValueError:
        # Rows of different lengths.
        return None
    # Letting numpy infer the type keeps strings and nulls out (they give a
    # string or object array), so the schema path reports them.
    if matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
        return None
    # numpy also turns a boolean next to numbers into 0.0 or 1.0, which the
    # schema rejects. Only rows that contain 0 or 1 can hide one, so only
    # their entries are type-checked; rows of other values cost nothing here.
    suspects = np.flatnonzero(((matrix == 0) | (matrix == 1)).any(axis=1))
    for row in suspects.tolist():
        if bool in set(map(type, lists[row])):
            return None
    return matrix.astype(np.float64, copy=False)


def _types_within(values: list[Any], types: tuple[type, ...]) -> bool:
    """Return whether every value's exact type is in ``types`` (bool is not int)."""
    return set(map(type, values)) <= set(types)


def parse_batch_fast(body: bytes, max_rows: int) -> ParsedBatch | None:
    """Decode a valid batch body straight into arrays; None when in doubt.

    Accepts a subset of what the ``ComparisonBatch`` schema accepts. Every row
    gives ``features``, or every row gives ``first`` and ``second``. Labels
    are JSON numbers in [0, 1], vectors contain numbers only, and client ids
    have no NUL character. For anything
    else (including every invalid body) it returns None, and the caller runs
    :func:`parse_batch`, which validates row by row and names each error.
    Skipping pydantic here matters: building and checking 64,000 floats per
    1,000-row batch as ``list[float]`` costs more than the SQLite insert.
    """
    try:
        document = pydantic_core.from_json(body)
    except ValueError:
        return None
    if type(document) is not dict or len(document) != 1:
        return None
    items = document.get("comparisons")
    if type(items) is not list or not 0 < len(items) <= max_rows:
        return None
    # Column by column with comprehensions: a missing key, a row that is not
    # an object or a value of the wrong type sends the batch to the slow path.
    if not all(type(row) is dict and row.keys() <= ROW_KEYS for row in items):
        return None
    try:
        task_names = [row["task"] for row in items]
        raw_labels = [row["label"] for row in items]
    except KeyError:
        return None
    client_ids = [row.get("id") for row in items]
    if not _types_within(task_names, (str,)):
        return None
    if not _types_within(raw_labels, (float, int)):
        return None
    try:
        labels = np.array(raw_labels, dtype=np.float64)
    except OverflowError:
        return None
    if not ((labels >= 0.0) & (labels <= 1.0)).all():
        return None
    if not _types_within(client_ids, (type(None),)) and not all(
        client_id is None
        or (
            type(client_id) is str
            and 1 <= len(client_id) <= 200
            and "\x00" not in client_id
        )
        for client_id in client_ids
    ):
        return None

    pairs = "features" not in items[0]
    try:
        if pairs:
            vectors = [row["first"] for row in items]
            seconds = [row["second"] for row in items]
            if any("features" in row for row in items):
                return None
        else:
            vectors = [row["features"] for row in items]
            seconds = []
            if any("first" in row or "second" in row for row in items):
                return None
    except KeyError:
        return None
    if not _types_within(vectors, (list,)) or not _types_within(seconds, (list,)):
        return None

    matrix = _number_matrix(vectors)
    if matrix is None:
        return None
    second_matrix = None
    if pairs:
        second_matrix = _number_matrix(seconds)
        if second_matrix is None or second_matrix.shape != matrix.shape:
            return None
    return ParsedBatch(
        task_names=task_names,
        client_ids=client_ids,
        labels=labels,
        vectors=matrix,
        seconds=second_matrix,
    )


def prepare_parsed(study: Study, parsed: ParsedBatch) -> PreparedRows | None:
    """Check a fast-parsed batch against the study; None when any row is bad.

    Bad rows (unknown task, wrong length, NaN, infinity or a value over
    :data:`MAX_ABS_FEATURE`) are not reported here: the caller runs the
    validating path, which names them all.
    """
    tasks = _task_lookup(study)
    task_ids = [tasks.get(name) for name in parsed.task_names]
    if None in task_ids:
        return None
    if parsed.vectors.shape[1] != study.dimension:
        return None
    features = parsed.vectors
    if parsed.seconds is not None:
        if not (_within_bound(parsed.vectors) and _within_bound(parsed.seconds)):
            return None
        features = parsed.vectors - parsed.seconds
    if not _within_bound(features):
        return None
    return PreparedRows(
        indices=list(range(len(task_ids))),
        task_ids=task_ids,  # type: ignore[arg-type]
        task_names=parsed.task_names,
        client_ids=parsed.client_ids,
        features=features,
        labels=parsed.labels,
    )


def ingest_json_body(
    session: Session,
    study_id: str,
    body: bytes,
    *,
    max_rows: int,
    max_reported_errors: int,
) -> IngestCounts:
    """Validate and store the body of ``POST .../comparisons`` atomically.

    The body is decoded outside the study lock. A valid batch takes the fast
    path (:func:`parse_batch_fast`, :func:`prepare_parsed`); any other goes
    through :func:`parse_batch` and :func:`ingest_batch`, which report every
    bad row. Both paths store the same rows for the same valid body.
    """
    from app.services.studies import require_study

    parsed = parse_batch_fast(body, max_rows)
    if parsed is None:
        rows, indices, schema_errors = parse_batch(body, max_rows)
    study = require_study(session, study_id, for_update=True)
    if parsed is not None:
        prepared = prepare_parsed(study, parsed)
        if prepared is not None:
            return _store_batch(session, study, prepared)
        rows, indices, schema_errors = parse_batch(body, max_rows)
    return ingest_batch(
        session,
        study,
        rows,
        indices,
        schema_errors=schema_errors,
        max_reported_errors=max_reported_errors,
    )


# Export ------------------------------------------------------------------------


def _encode_seq_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _decode_seq_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        prefix, value = base64.urlsafe_b64decode(padded).decode().split(":", 1)
        if prefix != "seq":
            raise ValueError(prefix)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid cursor '{cursor}'") from exc


def export_page(
    session: Session,
    study: Study,
    *,
    limit: int,
    cursor: str | None,
    task: str | None = None,
    phase: str | None = None,
) -> ComparisonPage:
    """Return one page of a study's comparisons in storage order."""
    task_names = {t.id: t.name for t in study.tasks}
    statement = (
        select(
            Comparison.id,
            Comparison.client_id,
            Comparison.task_id,
            Comparison.features,
            Comparison.label,
            Comparison.phase,
            Comparison.created_at,
        )
        .where(Comparison.study_id == study.id)
        .order_by(Comparison.id)
        .limit(limit + 1)
    )
    if cursor is not None:
        statement = statement.where(Comparison.id > _decode_seq_cursor(cursor))
    if task is not None:
        task_ids = [t.id for t in study.tasks if t.name == task]
        if not task_ids:
            raise ValidationProblem(
                "unknown task", [FieldError(None, "task", f"unknown task '{task}'")]
            )
        statement = statement.where(Comparison.task_id == task_ids[0])
    if phase is not None:
        statement = statement.where(Comparison.phase == phase)

    rows = session.execute(statement).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode_seq_cursor(rows[-1].id)
    features = decode_rows([row.features for row in rows], study.dimension)
    items = [
        ComparisonOut(
            seq=row.id,
            id=row.client_id,
            task=task_names[row.task_id],
            features=vector,
            label=row.label,
            phase=row.phase,
            created_at=row.created_at,
        )
        for row, vector in zip(rows, features.tolist(), strict=True)
    ]
    return ComparisonPage(items=items, next_cursor=next_cursor)
