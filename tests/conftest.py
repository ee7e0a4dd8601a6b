"""Shared fixtures for tests that touch the database or the HTTP API.

Fixture names are stable; tests of every part of the service use them.

- ``database_url`` (module scope, parametrised ``sqlite`` / ``postgresql``):
  URL of a fresh database migrated to the head revision. SQLite is a file in
  a temporary directory. PostgreSQL is a new database created on the server
  named by ``PREFBUDGET_TEST_POSTGRES_URL`` (for example
  ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and dropped after
  the module. Without that variable the PostgreSQL cases are skipped. Tests
  in one module share the database, so each test should create its own study.
- ``empty_database_url`` (function scope, same parameters): a fresh database
  with no tables, for migration and readiness tests.
- ``settings``: :class:`app.settings.Settings` for ``database_url``. API-key
  checks are off (``PREFBUDGET_AUTH_DISABLED=true`` for the test); tests of
  authentication build their own settings.
- ``app``: ``create_app(settings)``.
- ``client``: a ``fastapi.testclient.TestClient`` on ``app`` (lifespan run)
  that sends ``ADMIN_HEADERS``, the bootstrap admin key that every test
  process gets in ``PREFBUDGET_ADMIN_KEY``. Build another ``TestClient(app)``
  to send other keys or none.
- ``make_study``: ``make_study(client, **overrides) -> dict`` creates a study
  through the API (Algorithm 2, d = 4, sources a/b/c, target t by default)
  and returns the response body.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_ENV = "PREFBUDGET_TEST_POSTGRES_URL"
TEST_ADMIN_KEY = "test-admin-key-0123456789abcdef0123456789abcdef"
ADMIN_HEADERS = {"Authorization": f"Bearer {TEST_ADMIN_KEY}"}
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def pytest_configure(config: pytest.Config) -> None:
    # Starlette's TestClient warns that it will move to another HTTP library;
    # the client works as documented with the installed httpx.
    config.addinivalue_line(
        "filterwarnings", "ignore:Using `httpx` with `starlette.testclient`"
    )


@pytest.fixture(autouse=True, scope="session")
def _bootstrap_admin_key() -> Iterator[None]:
    previous = os.environ.get("PREFBUDGET_ADMIN_KEY")
    os.environ["PREFBUDGET_ADMIN_KEY"] = TEST_ADMIN_KEY
    yield
    if previous is None:
        os.environ.pop("PREFBUDGET_ADMIN_KEY", None)
    else:
        os.environ["PREFBUDGET_ADMIN_KEY"] = previous


def _postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        # CI sets PREFBUDGET_REQUIRE_POSTGRES so that a lost URL fails the run.
        if os.environ.get("PREFBUDGET_REQUIRE_POSTGRES"):
            pytest.fail(f"{POSTGRES_ENV} is not set but PREFBUDGET_REQUIRE_POSTGRES is")
        pytest.skip(f"{POSTGRES_ENV} is not set")
    return url


def _fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """Yield the URL of a new, empty database and drop it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'prefbudget-test.db'}"
        return

    admin_url = make_url(_postgres_admin_url())
    name = f"prefbudget_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    from app.db import migrations

    directory = tmp_path_factory.mktemp("db")
    for url in _fresh_database(request.param, directory):
        migrations.upgrade(url)
        yield url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database(request.param, tmp_path)


@pytest.fixture
def settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from app.settings import Settings

    monkeypatch.setenv("PREFBUDGET_AUTH_DISABLED", "true")
    return Settings(database_url=database_url)


@pytest.fixture
def app(settings: Any) -> Any:
    from app.main import create_app

    return create_app(settings)


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(app, headers=ADMIN_HEADERS) as test_client:
        yield test_client


def study_body(**overrides: Any) -> dict[str, Any]:
    """Return a valid study definition (Algorithm 2, d = 4) with overrides."""
    body: dict[str, Any] = {
        "name": "test study",
        "dimension": 4,
        "rank": 2,
        "source_tasks": ["a", "b", "c"],
        "target_task": "t",
        "relevance": None,
        "prior": None,
        "budget": {"source": 30, "target": 10, "pilot_source": 12, "pilot_target": 6},
        "settings": {},
    }
    body.update(overrides)
    return body


@pytest.fixture
def make_study() -> Callable[..., dict[str, Any]]:
    def create(client: Any, **overrides: Any) -> dict[str, Any]:
        response = client.post("/v1/studies", json=study_body(**overrides))
        assert response.status_code == 201, response.text
        return response.json()

    return create
