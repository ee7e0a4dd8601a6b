"""FastAPI dependencies that authenticate and authorise each request.

:func:`require_api_key` runs as a router-level dependency of every ``/v1``
router, before the endpoint loads anything, so a caller without access gets
401 or 403 whether or not the study in the path exists.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, Request

from app.auth.config import AuthSettings, auth_settings
from app.auth.keys import (
    AUTH_DISABLED,
    Principal,
    authenticate,
    is_allowed,
    is_loopback_host,
    parse_bearer,
)
from app.db.engine import open_session
from app.problems import Problem
from app.schemas.common import ProblemDetails

logger = logging.getLogger(__name__)

BEARER_CHALLENGE = 'Bearer realm="prefbudget"'


class Unauthorized(Problem):
    status = 401
    title = "Unauthorized"
    slug = "unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        challenge = BEARER_CHALLENGE
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(Problem):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class AuthConfigurationError(RuntimeError):
    """The auth settings are unsafe for the address the server listens on."""


def check_auth_configuration(auth: AuthSettings, host: str) -> None:
    """Reject disabled auth on a non-loopback ``host`` and log the auth mode.

    With auth disabled on loopback this logs a warning on every start, so the
    mode is never silent. With auth on and no bootstrap admin key it logs that
    only keys stored in the database are accepted.
    """
    if auth.auth_disabled:
        if not is_loopback_host(host):
            raise AuthConfigurationError(
                f"PREFBUDGET_AUTH_DISABLED=true is only allowed when the server "
                f"listens on a loopback address, not on {host!r}; unset it or "
                f"listen on 127.0.0.1"
            )
        logger.warning(
            "auth.disabled: API keys are NOT checked and every request acts as "
            "admin; listening on loopback only (host=%s)",
            host,
        )
    elif auth.admin_key is None:
        logger.info(
            "auth.enabled without PREFBUDGET_ADMIN_KEY: only keys stored in the "
            "database are accepted"
        )
    else:
        logger.info("auth.enabled with a bootstrap admin key")


def _auth_settings(request: Request) -> AuthSettings:
    state = request.app.state
    cached = getattr(state, "auth_settings", None)
    if cached is None:
        cached = auth_settings(state.settings)
        state.auth_settings = cached
    return cached


def require_api_key(request: Request) -> Principal:
    """Authenticate the bearer key and check its scope against the route.

    Raises :class:`Unauthorized` (401) for a missing, unknown or revoked key
    or more than one ``Authorization`` header, and :class:`Forbidden` (403)
    when the key's scope or studies do not cover the route. The principal is
    also stored as ``request.state.principal``.
    """
    auth = _auth_settings(request)
    if auth.auth_disabled:
        request.state.principal = AUTH_DISABLED
        return AUTH_DISABLED

    # With several headers, Starlette's ``headers.get`` returns the first, and a
    # proxy may have checked a different one, so reject the request instead.
    if len(request.headers.getlist("authorization")) > 1:
        raise Unauthorized(
            "the request has more than one Authorization header; send exactly one "
            "Authorization header",
            invalid_token=False,
        )
    token = parse_bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized(
            "missing API key; send it as `Authorization: Bearer <key>`",
            invalid_token=False,
        )

    admin_key = auth.admin_key.get_secret_value() if auth.admin_key else None
    # A short read-only session of its own, closed before the endpoint runs,
    # so that a rejected request never takes SQLite's write lock.
    session = open_session(request.app.state.session_factory, write=False)
    try:
        principal = authenticate(session, token, admin_key=admin_key)
    finally:
        session.close()
    if principal is None:
        raise Unauthorized("invalid or revoked API key", invalid_token=True)

    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    study_id = request.path_params.get("study_id")
    if not is_allowed(principal, request.method, template, study_id):
        logger.info(
            "auth.forbidden key_id=%s scope=%s method=%s route=%s",
            principal.key_id,
            principal.scope,
            request.method,
            template,
        )
        raise Forbidden(
            f"a {principal.scope} key may not call {request.method} {template}"
            + (" on this study" if study_id is not None else "")
        )
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_api_key)]

# Router-level dependencies and documented error responses of every ``/v1``
# router (``app.include_router(router, dependencies=..., responses=...)``).
API_DEPENDENCIES = [Depends(require_api_key)]
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ProblemDetails,
        "description": (
            "The API key is missing, unknown or revoked, or the request has "
            "more than one Authorization header."
        ),
        "content": {"application/problem+json": {}},
    },
    403: {
        "model": ProblemDetails,
        "description": (
            "The API key's scope does not cover this endpoint, or the key is not "
            "bound to this study. Returned before the study is looked up, so it "
            "does not tell whether the study exists."
        ),
        "content": {"application/problem+json": {}},
    },
}
