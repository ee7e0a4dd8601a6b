"""Settings of the fit queue: in-process runner, polling, heartbeats and retries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FitQueueSettings(BaseSettings):
    """Claim, heartbeat and retry settings of the fit queue.

    Read from ``PREFBUDGET_<NAME>`` environment variables, like
    :class:`app.settings.Settings`. :func:`queue_settings` lets fields of the
    same name on an ``app.settings.Settings`` object take precedence, so a
    settings object built in code can configure the queue as well.
    """

    model_config = SettingsConfigDict(env_prefix="PREFBUDGET_", extra="ignore")

    run_fits_in_process: bool = Field(
        default=True,
        description=(
            "Whether `prefbudget serve` runs queued fits in a background thread of "
            "the API process. Keep it on for a single process on SQLite; turn it "
            "off when separate `prefbudget worker` processes run the fits."
        ),
    )
    fit_isolation: Literal["process", "thread"] = Field(
        default="process",
        description=(
            "Where the in-process runner of `prefbudget serve` computes a fit: "
            "`process` in one spawned child process at a lower CPU priority, so "
            "requests keep their latency during a fit; `thread` in the runner "
            "thread itself. `prefbudget worker` always computes in its own thread."
        ),
    )
    fit_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description=(
            "Nice increment of the fit child process (`fit_isolation=process`); "
            "0 keeps the API process's priority."
        ),
    )
    fit_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Seconds an idle fit runner waits before it looks for work again.",
    )
    fit_heartbeat_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between heartbeats of a running fit.",
    )
    fit_stale_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "A running fit whose last heartbeat is older than this many seconds is "
            "taken to belong to a dead worker and is queued again. Keep it several "
            "times `fit_heartbeat_seconds`."
        ),
    )
    fit_max_attempts: int = Field(
        default=3,
        ge=1,
        description=(
            "Attempts a fit gets before it is marked failed: a worker that died "
            "or an unexpected error uses one attempt. Invalid data (a solver "
            "error) fails the fit at once, because running it again gives the "
            "same error."
        ),
    )


def queue_settings(settings: Any = None) -> FitQueueSettings:
    """Build the queue settings from the environment and ``settings``.

    Fields of ``settings`` whose names match a :class:`FitQueueSettings` field
    override the environment; anything else on ``settings`` is ignored.
    """
    if isinstance(settings, FitQueueSettings):
        return settings
    overrides = {
        name: getattr(settings, name)
        for name in FitQueueSettings.model_fields
        if settings is not None and hasattr(settings, name)
    }
    return FitQueueSettings(**overrides)
