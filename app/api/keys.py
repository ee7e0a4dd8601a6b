"""API-key endpoints: issue, list, read and revoke keys (admin scope only).

The admin-only rule is enforced by :func:`app.auth.dependencies.require_api_key`,
which every ``/v1`` router runs, through the scope rules in
:mod:`app.auth.keys`.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from app.api.deps import KeyIdPath, SessionDep
from app.auth.keys import create_key, revoke_key
from app.auth.models import ApiKey
from app.db.models import Study, utcnow
from app.problems import FieldError, NotFound, ValidationProblem
from app.schemas.common import is_resource_id, problem_responses
from app.schemas.keys import KeyCreate, KeyCreated, KeyOut, KeyPage

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/keys", tags=["keys"])

KEY_NOT_FOUND = {404: "The key does not exist."}


class KeyNotFound(NotFound):
    """No key has the requested id."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key '{key_id}' not found")


def _render(row: ApiKey) -> KeyOut:
    return KeyOut(
        id=row.id,
        name=row.name,
        scope=row.scope,  # type: ignore[arg-type]
        studies=list(row.studies),
        key_prefix=row.key_prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _require_key(session: SessionDep, key_id: str) -> ApiKey:
    # Ids that are not UUID-shaped never reach the database (PostgreSQL
    # rejects a NUL character in a query parameter).
    if not is_resource_id(key_id):
        raise KeyNotFound(key_id)
    row = session.get(ApiKey, key_id)
    if row is None:
        raise KeyNotFound(key_id)
    return row


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    summary="Issue an API key",
    responses=problem_responses(422),
)
def issue_key(body: KeyCreate, session: SessionDep) -> KeyCreated:
    """Issue a key. The response contains the secret, which is never shown again."""
    studies = list(dict.fromkeys(body.studies))
    if studies:
        well_formed = [study_id for study_id in studies if is_resource_id(study_id)]
        found = set(session.scalars(select(Study.id).where(Study.id.in_(well_formed))))
        missing = [
            FieldError(None, f"studies.{index}", f"study '{study_id}' not found")
            for index, study_id in enumerate(studies)
            if study_id not in found
        ]
        if missing:
            raise ValidationProblem("the key names studies that do not exist", missing)

    row, plain = create_key(session, name=body.name, scope=body.scope, studies=studies)
    logger.info(
        "key.issued key_id=%s scope=%s studies=%d", row.id, row.scope, len(studies)
    )
    return KeyCreated(**_render(row).model_dump(), key=plain)


@router.get("", response_model=KeyPage, summary="List API keys")
def list_keys(session: SessionDep) -> KeyPage:
    """List every issued key, revoked ones included, newest first, without secrets."""
    rows = session.scalars(
        select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    ).all()
    return KeyPage(items=[_render(row) for row in rows])


@router.get(
    "/{key_id}",
    response_model=KeyOut,
    summary="Get an API key",
    responses=problem_responses(404, descriptions=KEY_NOT_FOUND),
)
def get_key(key_id: KeyIdPath, session: SessionDep) -> KeyOut:
    """Return one key without its secret."""
    return _render(_require_key(session, key_id))


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key",
    responses=problem_responses(404, descriptions=KEY_NOT_FOUND),
)
def delete_key(key_id: KeyIdPath, session: SessionDep) -> Response:
    """Revoke a key: requests with it get 401 from now on. Revoking twice is a no-op.

    The bootstrap key from `PREFBUDGET_ADMIN_KEY` is not stored and cannot be
    revoked here; change the variable and restart the servers instead.
    """
    row = _require_key(session, key_id)
    already_revoked = row.revoked_at is not None
    revoke_key(row, utcnow())
    if not already_revoked:
        logger.info("key.revoked key_id=%s scope=%s", row.id, row.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
