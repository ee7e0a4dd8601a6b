"""ORM model of an API key.

Only the SHA-256 digest of a key is stored. Keys are 256-bit random tokens, so
an unsalted fast hash is enough because a preimage cannot be guessed. Requests
are looked up by the digest of the key they present.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.db.models import new_uuid, utcnow

SCOPES = ("admin", "labeler", "reader")


class ApiKey(Base):
    """An issued API key: its scope, the studies it is bound to, and its state.

    ``studies`` lists study ids and is only non-empty for ``labeler`` keys.
    ``key_prefix`` is the start of the plain key, kept so that an operator can
    tell keys apart in listings without the secret.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    studies: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    revoked_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
