"""Comparison endpoints: JSON batches, bulk import and export."""

from __future__ import annotations

import logging
import tempfile
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import SessionDep, SettingsDep
from app.metrics import record_labels_after_commit
from app.problems import UnsupportedMediaType
from app.schemas.common import problem_responses
from app.schemas.comparisons import ComparisonPage, IngestResult
from app.services import ingest
from app.services.studies import require_study
from app.settings import Settings

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/studies/{study_id}/comparisons", tags=["comparisons"])

BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ComparisonBatch"}
            }
        },
    }
}

IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            "JSON Lines: one `ComparisonIn` object per line; errors name the "
            "zero-based line number as `index`. Parquet: columns `task` "
            "(string), `label` (number), `features` (list of d numbers) or "
            "`first` and `second`, and optionally `id` (string); errors name "
            "the zero-based row as `index`."
        ),
        "content": {
            "application/x-ndjson": {
                "schema": {"$ref": "#/components/schemas/ComparisonIn"}
            },
            "application/vnd.apache.parquet": {
                "schema": {"type": "string", "format": "binary"}
            },
        },
    }
}


def _media_type(request: Request) -> str:
    """Return the request's media type, lowercased, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _is_json_media_type(media_type: str) -> bool:
    """Return whether ``media_type`` is application/json or application/*+json."""
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


@router.post(
    "",
    response_model=IngestResult,
    summary="Add a batch of comparisons",
    openapi_extra=BATCH_BODY,
    responses=problem_responses(404, 409, 413, 415, 422),
)
async def post_comparisons(
    study_id: str, request: Request, session: SessionDep, settings: SettingsDep
) -> IngestResult:
    """Store a batch atomically: every row is stored, or none is.

    Each row is stored with the study's current phase. Rows whose `id` is
    already stored with the same content count as duplicates. The body must
    be sent as `application/json` (or an `application/*+json` type).
    """
    media_type = _media_type(request)
    if not _is_json_media_type(media_type):
        raise UnsupportedMediaType(
            f"unsupported content type '{media_type or 'none'}'; send the batch "
            "as application/json"
        )
    body = await request.body()
    counts = await run_in_threadpool(
        partial(
            ingest.ingest_json_body,
            session,
            study_id,
            body,
            max_rows=settings.max_batch_rows,
            max_reported_errors=settings.max_reported_errors,
        )
    )
    record_labels_after_commit(session, counts.inserted, counts.duplicates)
    return IngestResult(inserted=counts.inserted, duplicates=counts.duplicates)


@router.post(
    "/import",
    response_model=IngestResult,
    summary="Import comparisons from a JSON Lines or Parquet file",
    openapi_extra=IMPORT_BODY,
    responses=problem_responses(404, 409, 413, 415, 422),
)
async def import_comparisons(
    study_id: str, request: Request, session: SessionDep, settings: SettingsDep
) -> IngestResult:
    """Import a file sent as the raw request body, all rows or none.

    The body is streamed to a temporary file and read back in chunks, so
    memory use does not grow with the file. Validation and idempotency rules
    are those of the batch endpoint, without its row limit.
    """
    media_type = _media_type(request)
    if media_type in ingest.PARQUET_MEDIA_TYPES:
        file_format = "parquet"
    elif media_type in ingest.JSONL_MEDIA_TYPES:
        file_format = "jsonl"
    else:
        raise UnsupportedMediaType(
            f"unsupported content type '{media_type or 'none'}'; send "
            "application/x-ndjson (JSON Lines) or application/vnd.apache.parquet"
        )

    with tempfile.NamedTemporaryFile(prefix="prefbudget-import-") as spool:
        size = 0
        async for chunk in request.stream():
            spool.write(chunk)
            size += len(chunk)
        spool.flush()
        logger.info(
            "ingest.import_received study_id=%s format=%s bytes=%d",
            study_id,
            file_format,
            size,
        )
        counts = await run_in_threadpool(
            _import_spool, session, study_id, spool.name, file_format, settings
        )
    record_labels_after_commit(session, counts.inserted, counts.duplicates)
    return IngestResult(inserted=counts.inserted, duplicates=counts.duplicates)


def _import_spool(
    session: Session,
    study_id: str,
    path: str,
    file_format: str,
    settings: Settings,
) -> ingest.IngestCounts:
    study = require_study(session, study_id, for_update=True)
    return ingest.import_file(
        session,
        study,
        path,
        file_format,
        chunk_rows=settings.import_chunk_rows,
        max_reported_errors=settings.max_reported_errors,
    )


@router.get(
    "",
    response_model=ComparisonPage,
    summary="Export stored comparisons",
    responses=problem_responses(400, 404, 422),
)
def export_comparisons(
    study_id: str,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[
        int | None,
        Query(ge=1, description="Comparisons per page; capped by the server maximum."),
    ] = None,
    cursor: Annotated[
        str | None, Query(description="`next_cursor` of the previous page.")
    ] = None,
    task: Annotated[str | None, Query(description="Only this task.")] = None,
    phase: Annotated[
        Literal["pilot", "main", "complete"] | None,
        Query(description="Only comparisons stored in this phase."),
    ] = None,
) -> ComparisonPage:
    """Page through a study's comparisons in the order they were stored."""
    study = require_study(session, study_id)
    page_size = min(limit or settings.export_default_limit, settings.export_max_limit)
    return ingest.export_page(
        session, study, limit=page_size, cursor=cursor, task=task, phase=phase
    )
