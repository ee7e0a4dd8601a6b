"""Key generation, hashing, lookup and the scope rules of each route.

A request carries ``Authorization: Bearer <key>``. The key is hashed with
SHA-256 and the digest is what the bootstrap admin key is compared against
and what the ``api_keys`` table is searched by, so the plain key never reaches
the database or a log. Every digest comparison goes through
:func:`hmac.compare_digest`.

Scopes:

``admin``
    Every endpoint, including key management under ``/v1/keys``.
``labeler``
    Bound to a list of studies. Posts comparisons (JSON batches and bulk
    imports) and reads quotas of those studies, nothing else.
``reader``
    Read-only access to every study: ``GET`` requests, plus the policy
    endpoint, which computes decisions from the stored model and writes
    nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import SCOPES, ApiKey

KEY_PREFIX = "pbk_"
# Characters of the plain key kept in ``api_keys.key_prefix`` for display.
DISPLAY_PREFIX_LENGTH = 12

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STUDY_PATH = "/v1/studies/{study_id}"


@dataclass(frozen=True)
class Principal:
    """The caller behind a request, after its key was checked."""

    key_id: str
    name: str
    scope: str
    studies: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


BOOTSTRAP_ADMIN = Principal(
    key_id="bootstrap", name="PREFBUDGET_ADMIN_KEY", scope="admin"
)
AUTH_DISABLED = Principal(key_id="auth-disabled", name="auth disabled", scope="admin")


def generate_key() -> str:
    """Return a new random key: ``pbk_`` and 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Return the SHA-256 hex digest of ``key``, as stored in ``api_keys``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_bearer(header: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def authenticate(
    session: Session, key: str, *, admin_key: str | None
) -> Principal | None:
    """Return the principal that ``key`` belongs to, or None for an unknown key.

    The bootstrap admin key is checked first. Stored keys are found by the
    digest of ``key`` and then compared again in constant time, so the
    result does not depend on the database's string comparison. Revoked keys
    return None.
    """
    digest = hash_key(key)
    if admin_key and hmac.compare_digest(digest, hash_key(admin_key)):
        return BOOTSTRAP_ADMIN

    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    if row.revoked_at is not None:
        return None
    return Principal(
        key_id=row.id, name=row.name, scope=row.scope, studies=frozenset(row.studies)
    )


def is_allowed(
    principal: Principal, method: str, path: str, study_id: str | None
) -> bool:
    """Decide whether ``principal`` may call ``method`` on the route ``path``.

    ``path`` is the route template (``/v1/studies/{study_id}/quotas``), not the
    request path, and ``study_id`` the study in the request path, if any.
    Anything not granted below is denied.
    """
    if principal.is_admin:
        return True
    if path == "/v1/keys" or path.startswith("/v1/keys/"):
        return False

    if principal.scope == "reader":
        if method in READ_METHODS:
            return True
        return method == "POST" and path == STUDY_PATH + "/policy"

    if principal.scope == "labeler":
        if study_id is None or study_id not in principal.studies:
            return False
        posts_labels = method == "POST" and (
            path == STUDY_PATH + "/comparisons"
            or path.startswith(STUDY_PATH + "/comparisons/")
        )
        reads_quotas = method in READ_METHODS and path == STUDY_PATH + "/quotas"
        return posts_labels or reads_quotas

    return False


def is_loopback_host(host: str) -> bool:
    """Return whether ``host`` only accepts connections from this machine.

    ``localhost`` and addresses in 127.0.0.0/8 or ``::1`` count; wildcard
    addresses such as ``0.0.0.0`` and ``::`` do not.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_key(
    session: Session, *, name: str, scope: str, studies: list[str]
) -> tuple[ApiKey, str]:
    """Insert a new key and return its row and the plain key (shown only once)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}")
    plain = generate_key()
    row = ApiKey(
        name=name,
        scope=scope,
        key_hash=hash_key(plain),
        key_prefix=plain[:DISPLAY_PREFIX_LENGTH],
        studies=list(studies),
    )
    session.add(row)
    session.flush()
    return row, plain


def revoke_key(row: ApiKey, now: datetime) -> None:
    """Mark ``row`` revoked at ``now``; revoking twice keeps the first time."""
    if row.revoked_at is None:
        row.revoked_at = now
