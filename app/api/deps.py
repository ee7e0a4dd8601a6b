"""Request dependencies: settings and the per-request database session.

Dependency names are stable; other routers reuse them:

- ``SessionDep``: one session per request. Its transaction commits after the
  endpoint returns and before the response is sent, and rolls back when the
  endpoint raises. Requests with a method other than GET, HEAD or OPTIONS get
  a write session (on SQLite it takes the database write lock at ``BEGIN``).
- ``SettingsDep``: the :class:`~app.settings.Settings` the app was created with.
- ``StudyIdPath``, ``FitIdPath``, ``KeyIdPath``: the documented path
  parameters ``study_id``, ``fit_id`` and ``key_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from app.db.engine import open_session
from app.settings import Settings

logger = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings(request: Request) -> Settings:
    """Return the settings stored on the application at creation."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """Yield a session whose transaction commits on success, rolls back on error."""
    factory = request.app.state.session_factory
    session = open_session(factory, write=request.method not in READ_METHODS)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function" runs the commit right after the endpoint returns, so a
# failed commit becomes an error response instead of a lost write after a 2xx.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]

StudyIdPath = Annotated[
    str, Path(description="Study id: the UUID returned by `POST /v1/studies`.")
]
FitIdPath = Annotated[
    str,
    Path(
        description="Fit id: the UUID returned by `POST /v1/studies/{study_id}/fits`."
    ),
]
KeyIdPath = Annotated[
    str, Path(description="Key id: the UUID returned by `POST /v1/keys`.")
]
