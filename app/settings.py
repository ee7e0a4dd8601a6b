"""Service configuration, read from ``PREFBUDGET_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration of one prefbudget process (API server, CLI or worker).

    Every field can be set through the environment variable ``PREFBUDGET_<NAME>``
    (for example ``PREFBUDGET_DATABASE_URL``) or a ``.env`` file in the working
    directory.
    """

    model_config = SettingsConfigDict(
        env_prefix="PREFBUDGET_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    database_url: str = Field(
        default="sqlite:///./prefbudget.db",
        description=(
            "SQLAlchemy database URL. SQLite files (sqlite:///path) suit one "
            "process; PostgreSQL through psycopg 3 "
            "(postgresql+psycopg://user@host/db) suits several replicas and workers."
        ),
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address that `prefbudget serve` listens on. Loopback by default.",
    )
    port: int = Field(
        default=8000, ge=0, le=65535, description="TCP port of `prefbudget serve`."
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1,
        description=(
            "Largest accepted request body in bytes for every endpoint except the "
            "bulk import; larger bodies get 413. The default fits a batch of "
            "10,000 comparisons at d = 64 sent as `first` and `second`."
        ),
    )
    max_import_bytes: int = Field(
        default=8 * 1024 * 1024 * 1024,
        ge=1,
        description=(
            "Largest accepted body in bytes for "
            "POST /v1/studies/{study_id}/comparisons/import; larger bodies get 413. "
            "The body is spooled to a temporary file, so this bounds disk use, "
            "not memory."
        ),
    )
    max_batch_rows: int = Field(
        default=10_000,
        ge=1,
        description=(
            "Maximum number of comparisons in one JSON batch; larger batches get 413."
        ),
    )
    import_chunk_rows: int = Field(
        default=20_000,
        ge=1,
        description=(
            "Rows validated and inserted together during a bulk import. Peak "
            "memory of an import grows with this value, not with the file size."
        ),
    )
    max_reported_errors: int = Field(
        default=1000,
        ge=1,
        description=(
            "Maximum number of row errors listed in one 422 response. The total "
            "count is always reported."
        ),
    )
    export_default_limit: int = Field(
        default=100, ge=1, description="Page size of the comparison export by default."
    )
    export_max_limit: int = Field(
        default=5000, ge=1, description="Largest page size of the comparison export."
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        description=(
            "How long a SQLite connection waits for a lock held by another "
            "connection before failing, in milliseconds."
        ),
    )
    db_pool_size: int = Field(
        default=10,
        ge=1,
        description="Connections kept open per process (PostgreSQL only).",
    )
    migrate_on_start: bool = Field(
        default=True,
        description=(
            "Whether `prefbudget serve` applies pending Alembic migrations "
            "before it starts listening."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Lowest level of log records that are written."
    )
    log_format: Literal["plain", "json"] = Field(
        default="plain",
        description="Log line format: human-readable text or one JSON object a line.",
    )


def get_settings() -> Settings:
    """Read the settings from the environment (a new object on every call)."""
    return Settings()
