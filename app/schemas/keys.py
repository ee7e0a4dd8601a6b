"""Request and response bodies of the API-key endpoints under ``/v1/keys``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

Scope = Literal["admin", "labeler", "reader"]


class KeyCreate(BaseModel):
    """A key to issue."""

    name: str = Field(
        min_length=1,
        max_length=200,
        description="Label that tells operators whose key this is.",
        examples=["labeling-platform-eu"],
    )
    scope: Scope = Field(
        description=(
            "`admin`: every endpoint, including keys. `labeler`: post comparisons "
            "to and read quotas of the studies in `studies`. `reader`: read "
            "every study and ask for policy decisions."
        )
    )
    studies: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Ids of the studies a `labeler` key may use; empty otherwise.",
    )

    @model_validator(mode="after")
    def _check_studies_match_scope(self) -> KeyCreate:
        if self.scope == "labeler" and not self.studies:
            raise ValueError("a labeler key needs at least one study in `studies`")
        if self.scope != "labeler" and self.studies:
            raise ValueError(f"an {self.scope} key takes no `studies`")
        return self


class KeyOut(BaseModel):
    """An issued key, without its secret."""

    id: str = Field(description="Key id, used to revoke the key.")
    name: str
    scope: Scope
    studies: list[str] = Field(description="Studies a `labeler` key is bound to.")
    key_prefix: str = Field(
        description="First characters of the key, to tell keys apart.",
        examples=["pbk_3fZ0aQ1x"],
    )
    created_at: datetime
    revoked_at: datetime | None = Field(
        description="When the key was revoked; null while it is valid."
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

    items: list[KeyOut]
