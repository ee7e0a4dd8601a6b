"""Request and response bodies of the API-key endpoints under ``/v1/keys``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from app.schemas.common import NulFreeStr, UTCDatetime

Scope = Literal["admin", "labeler", "reader"]

SCOPE_DESCRIPTION = (
    "`admin`: every endpoint, including keys. `labeler`: post comparisons to and "
    "read quotas of the studies in `studies`. `reader`: read every study and ask "
    "for policy decisions."
)


class KeyCreate(BaseModel):
    """A key to issue."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: NulFreeStr = Field(
        min_length=1,
        max_length=200,
        description="Label that tells operators whose key this is.",
        examples=["labeling-platform-eu"],
    )
    scope: Scope = Field(description=SCOPE_DESCRIPTION)
    studies: list[NulFreeStr] = Field(
        default_factory=list,
        # Validate the empty default too, so a labeler key without studies fails.
        validate_default=True,
        max_length=1000,
        description=(
            "Ids of the studies a `labeler` key may use, at least one; must be "
            "empty for the other scopes."
        ),
    )

    @field_validator("studies")
    @classmethod
    def _check_studies_match_scope(
        cls, studies: list[str], info: ValidationInfo
    ) -> list[str]:
        scope = info.data.get("scope")
        if scope == "labeler" and not studies:
            raise PydanticCustomError(
                "labeler_without_studies",
                "a labeler key needs at least one study in `studies`",
            )
        if scope in ("admin", "reader") and studies:
            article = "an" if scope == "admin" else "a"
            raise PydanticCustomError(
                "studies_not_allowed",
                "{article} {scope} key takes no studies; leave `studies` empty",
                {"article": article, "scope": scope},
            )
        return studies


class KeyOut(BaseModel):
    """An issued key, without its secret."""

    id: str = Field(description="Key id (UUID), used to read and revoke the key.")
    name: str = Field(description="Label given when the key was issued.")
    scope: Scope = Field(description=SCOPE_DESCRIPTION)
    studies: list[str] = Field(
        description="Studies a `labeler` key is bound to; empty for other scopes."
    )
    key_prefix: str = Field(
        description="First characters of the key, to tell keys apart.",
        examples=["pbk_3fZ0aQ1x"],
    )
    created_at: UTCDatetime = Field(description="When the key was issued (UTC).")
    revoked_at: UTCDatetime | None = Field(
        description="When the key was revoked (UTC); null while it is valid."
    )


class KeyCreated(KeyOut):
    """A newly issued key with its secret, which is returned only this once."""

    key: str = Field(
        description=(
            "The secret to send as `Authorization: Bearer <key>`. Only its "
            "SHA-256 digest is stored, so it cannot be shown again."
        )
    )


class KeyPage(BaseModel):
    """Every issued key, newest first."""

    items: list[KeyOut] = Field(
        description="Every issued key, revoked ones included, newest first."
    )
