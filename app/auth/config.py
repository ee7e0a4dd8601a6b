"""Settings of API-key authentication."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_KEY_LENGTH = 32


class AuthSettings(BaseSettings):
    """Bootstrap admin key and the switch that turns authentication off.

    Read from ``PREFBUDGET_<NAME>`` environment variables, like
    :class:`app.settings.Settings`; :func:`auth_settings` lets fields of the
    same name on a ``Settings`` object take precedence.
    """

    model_config = SettingsConfigDict(
        env_prefix="PREFBUDGET_", env_file=".env", extra="ignore"
    )

    admin_key: SecretStr | None = Field(
        default=None,
        description=(
            "Bootstrap admin key, accepted as `Authorization: Bearer <key>` with "
            "the admin scope. It is not stored in the database and cannot be "
            "revoked through the API; change the variable and restart to rotate "
            f"it. At least {MIN_ADMIN_KEY_LENGTH} characters, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        ),
    )
    auth_disabled: bool = Field(
        default=False,
        description=(
            "Turn API-key checks off: every request acts as admin. Only accepted "
            "when the server listens on a loopback address."
        ),
    )

    @field_validator("admin_key")
    @classmethod
    def _check_admin_key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(
                f"PREFBUDGET_ADMIN_KEY is too short: use at least "
                f"{MIN_ADMIN_KEY_LENGTH} random characters"
            )
        return value


def auth_settings(settings: Any = None) -> AuthSettings:
    """Build the auth settings from the environment and ``settings``.

    Fields of ``settings`` whose names match an :class:`AuthSettings` field
    override the environment; anything else on ``settings`` is ignored.
    """
    if isinstance(settings, AuthSettings):
        return settings
    overrides = {
        name: getattr(settings, name)
        for name in AuthSettings.model_fields
        if settings is not None and hasattr(settings, name)
    }
    return AuthSettings(**overrides)
