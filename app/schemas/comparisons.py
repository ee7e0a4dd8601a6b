"""Request and response models of the comparison (label) endpoints.

Incoming comparisons are ``TypedDict`` schemas rather than models: pydantic
validates them straight from JSON bytes into plain dicts, which is about a
third cheaper than building model objects on the ingest path.

Numbers are strict: labels and feature entries must be JSON numbers, so a
string such as ``"1"`` or a boolean is rejected rather than converted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, NotRequired

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter
from typing_extensions import TypedDict

from app.schemas.common import MAX_ABS_FEATURE, NulFreeStr

Number = Annotated[float, Strict()]
Vector = list[Number]


class ComparisonIn(TypedDict):
    """One pairwise-preference label; give `features`, or `first` and `second`."""

    __pydantic_config__ = ConfigDict(  # type: ignore[misc]
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "rater7-item42",
                    "task": "tone",
                    "features": [0.5, -1.0, 0.25],
                    "label": 1,
                },
                {
                    "task": "tone",
                    "first": [1.0, 0.0, 2.0],
                    "second": [0.5, 1.0, 1.75],
                    "label": 0.5,
                },
            ]
        },
    )

    id: NotRequired[
        Annotated[
            NulFreeStr | None,
            Field(
                min_length=1,
                max_length=200,
                description=(
                    "Optional client key, unique within the study. A replay with "
                    "the same content counts as a duplicate; the same key with "
                    "other content is rejected with 409."
                ),
            ),
        ]
    ]
    task: Annotated[NulFreeStr, Field(description="Name of a task of the study.")]
    features: NotRequired[
        Annotated[
            Vector | None,
            Field(
                description=(
                    "phi(s, a1) - phi(s, a2): d finite numbers, each at most "
                    f"{MAX_ABS_FEATURE:g} in absolute value."
                )
            ),
        ]
    ]
    first: NotRequired[
        Annotated[
            Vector | None,
            Field(
                description=(
                    "phi(s, a1), features of the first action: d numbers, each "
                    f"at most {MAX_ABS_FEATURE:g} in absolute value."
                )
            ),
        ]
    ]
    second: NotRequired[
        Annotated[
            Vector | None,
            Field(
                description=(
                    "phi(s, a2), features of the second action: d numbers, each "
                    f"at most {MAX_ABS_FEATURE:g} in absolute value."
                )
            ),
        ]
    ]
    label: Annotated[
        Number,
        Field(
            ge=0.0,
            le=1.0,
            allow_inf_nan=False,
            description=(
                "A JSON number in [0, 1]: 1 means the first action was preferred, "
                "0 the second; fractions are ties or split votes."
            ),
        ),
    ]


class ComparisonBatch(TypedDict):
    """A batch of comparisons, stored all together or not at all."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    comparisons: Annotated[
        list[ComparisonIn],
        Field(description="At least one comparison, at most the configured maximum."),
    ]


comparison_adapter: TypeAdapter[ComparisonIn] = TypeAdapter(ComparisonIn)
comparison_list_adapter: TypeAdapter[list[ComparisonIn]] = TypeAdapter(
    list[ComparisonIn]
)
batch_adapter: TypeAdapter[ComparisonBatch] = TypeAdapter(ComparisonBatch)


class IngestResult(BaseModel):
    """Outcome of a batch or an import."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inserted": 998, "duplicates": 2}]}
    )

    inserted: int = Field(description="Comparisons stored by this request.")
    duplicates: int = Field(
        description=(
            "Comparisons skipped because their id is already stored with the "
            "same content (or repeats an earlier row of the same request)."
        )
    )


class ComparisonOut(BaseModel):
    """A stored comparison, in the shape that the batch endpoint accepts."""

    seq: int = Field(description="Server-assigned sequence number, increasing.")
    id: str | None = Field(description="Client key given at upload, or null.")
    task: str = Field(description="Task name.")
    features: list[float] = Field(description="Stored feature difference (d numbers).")
    label: float = Field(description="Label in [0, 1].")
    phase: str = Field(description="Study phase when the comparison arrived.")
    created_at: datetime = Field(description="Time the comparison was stored (UTC).")


class ComparisonPage(BaseModel):
    """One page of the comparison export, oldest first."""

    items: list[ComparisonOut] = Field(description="Comparisons on this page.")
    next_cursor: str | None = Field(
        description="Opaque cursor of the next page, or null on the last page."
    )
