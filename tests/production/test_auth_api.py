"""API keys over HTTP: 401 and 403 at every scope boundary, revocation, hashing."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ADMIN_HEADERS, TEST_ADMIN_KEY
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.auth import keys as auth_keys
from app.auth.dependencies import AuthConfigurationError
from app.main import create_app
from app.settings import Settings

PROBLEM = "application/problem+json"
MISSING_STUDY = "00000000-0000-4000-8000-000000000000"
FEATURES = [0.5, -0.25, 1.0, 0.0]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings with API keys checked (conftest's default turns the checks off)."""
    return Settings(database_url=database_url)


@pytest.fixture
def anonymous(app: Any) -> Iterator[TestClient]:
    """A client on the same app that sends no key by default.

    It does not run the app's lifespan, because ``client`` may run it already
    and a second run would start a second in-process fit runner.
    """
    test_client = TestClient(app)
    yield test_client
    test_client.close()


def issue(client: TestClient, scope: str, studies: list[str] | None = None) -> dict:
    response = client.post(
        "/v1/keys",
        json={"name": f"{scope} key", "scope": scope, "studies": studies or []},
    )
    assert response.status_code == 201, response.text
    return response.json()


def comparison_batch() -> dict:
    return {"comparisons": [{"task": "a", "features": FEATURES, "label": 1.0}]}


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    return body


# --- 401 ---------------------------------------------------------------------


def test_missing_key_is_401_with_challenge(anonymous) -> None:
    response = anonymous.get("/v1/studies")

    body = assert_problem(response, 401)
    assert body["type"].endswith(":unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="prefbudget"'


def test_wrong_key_is_401(anonymous) -> None:
    response = anonymous.get("/v1/studies", headers=bearer("pbk_not-a-real-key"))

    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_other_scheme_is_401(anonymous) -> None:
    response = anonymous.get(
        "/v1/studies", headers={"Authorization": f"Basic {TEST_ADMIN_KEY}"}
    )
    assert_problem(response, 401)


def test_two_authorization_headers_are_401(anonymous) -> None:
    admin = ("Authorization", f"Bearer {TEST_ADMIN_KEY}")
    other = ("Authorization", "Bearer pbk_not-a-real-key")

    for headers in ([admin, other], [other, admin], [admin, admin]):
        response = anonymous.get("/v1/studies", headers=headers)

        body = assert_problem(response, 401)
        assert "exactly one Authorization header" in body["detail"]


def test_401_does_not_reveal_study_existence(anonymous, client, make_study) -> None:
    study = make_study(client)

    existing = anonymous.get(f"/v1/studies/{study['id']}")
    missing = anonymous.get(f"/v1/studies/{MISSING_STUDY}")

    assert_problem(existing, 401)
    assert_problem(missing, 401)
    assert existing.json()["detail"] == missing.json()["detail"]


def test_health_and_metrics_need_no_key(anonymous) -> None:
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code == 200
    assert anonymous.get("/metrics").status_code == 200


def test_bootstrap_admin_key_is_accepted(anonymous) -> None:
    assert anonymous.get("/v1/studies", headers=ADMIN_HEADERS).status_code == 200


# --- admin and key management ------------------------------------------------


def test_issued_key_is_returned_once_and_stored_hashed(client, app) -> None:
    created = issue(client, "reader")

    assert created["key"].startswith("pbk_")
    assert created["key_prefix"] == created["key"][:12]
    listed = client.get(f"/v1/keys/{created['id']}").json()
    assert "key" not in listed
    assert listed["revoked_at"] is None

    from app.auth.models import ApiKey

    with app.state.session_factory() as session:
        row = session.get(ApiKey, created["id"])
        assert row.key_hash == hashlib.sha256(created["key"].encode()).hexdigest()
        assert created["key"] not in (row.key_hash, row.name, row.key_prefix)


def test_issued_admin_key_manages_keys(client, anonymous) -> None:
    admin = issue(client, "admin")

    response = anonymous.post(
        "/v1/keys",
        json={"name": "second", "scope": "reader"},
        headers=bearer(admin["key"]),
    )
    assert response.status_code == 201


def test_labeler_key_needs_studies(client) -> None:
    response = client.post("/v1/keys", json={"name": "x", "scope": "labeler"})
    assert_problem(response, 422)


def test_reader_key_takes_no_studies(client, make_study) -> None:
    study = make_study(client)
    response = client.post(
        "/v1/keys", json={"name": "x", "scope": "reader", "studies": [study["id"]]}
    )
    assert_problem(response, 422)


def test_labeler_key_for_unknown_study_is_422(client) -> None:
    response = client.post(
        "/v1/keys", json={"name": "x", "scope": "labeler", "studies": [MISSING_STUDY]}
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"] == "studies.0"


def test_unknown_key_id_is_404(client) -> None:
    assert_problem(client.delete(f"/v1/keys/{MISSING_STUDY}"), 404)
    assert_problem(client.get(f"/v1/keys/{MISSING_STUDY}"), 404)


def test_list_keys_omits_secrets(client) -> None:
    created = issue(client, "reader")

    items = client.get("/v1/keys").json()["items"]

    assert created["id"] in {item["id"] for item in items}
    assert all("key" not in item for item in items)


# --- revocation --------------------------------------------------------------


def test_revoked_key_is_401(client, anonymous) -> None:
    created = issue(client, "reader")
    headers = bearer(created["key"])
    assert anonymous.get("/v1/studies", headers=headers).status_code == 200

    assert client.delete(f"/v1/keys/{created['id']}").status_code == 204

    assert_problem(anonymous.get("/v1/studies", headers=headers), 401)
    assert client.get(f"/v1/keys/{created['id']}").json()["revoked_at"] is not None


def test_revoking_twice_keeps_first_time(client) -> None:
    created = issue(client, "reader")
    assert client.delete(f"/v1/keys/{created['id']}").status_code == 204
    first = client.get(f"/v1/keys/{created['id']}").json()["revoked_at"]

    assert client.delete(f"/v1/keys/{created['id']}").status_code == 204

    assert client.get(f"/v1/keys/{created['id']}").json()["revoked_at"] == first


def test_revoked_admin_key_cannot_issue_keys(client, anonymous) -> None:
    admin = issue(client, "admin")
    client.delete(f"/v1/keys/{admin['id']}")

    response = anonymous.post(
        "/v1/keys", json={"name": "x", "scope": "admin"}, headers=bearer(admin["key"])
    )
    assert_problem(response, 401)


# --- scope boundaries --------------------------------------------------------


def test_reader_reads_but_cannot_write(client, anonymous, make_study) -> None:
    study = make_study(client)
    headers = bearer(issue(client, "reader")["key"])

    assert anonymous.get("/v1/studies", headers=headers).status_code == 200
    assert (
        anonymous.get(f"/v1/studies/{study['id']}", headers=headers).status_code == 200
    )
    quotas = anonymous.get(f"/v1/studies/{study['id']}/quotas", headers=headers)
    assert quotas.status_code == 200
    export = anonymous.get(f"/v1/studies/{study['id']}/comparisons", headers=headers)
    assert export.status_code == 200

    writes = [
        ("POST", "/v1/studies", {"name": "x"}),
        ("POST", f"/v1/studies/{study['id']}/comparisons", comparison_batch()),
        ("POST", f"/v1/studies/{study['id']}/fits", None),
        ("POST", "/v1/keys", {"name": "x", "scope": "reader"}),
        ("GET", "/v1/keys", None),
    ]
    for method, path, body in writes:
        response = anonymous.request(method, path, json=body, headers=headers)
        body = assert_problem(response, 403)
        assert body["type"].endswith(":forbidden"), path


def test_labeler_posts_labels_and_reads_quotas(client, anonymous, make_study) -> None:
    study = make_study(client)
    key = issue(client, "labeler", [study["id"]])["key"]
    headers = bearer(key)

    posted = anonymous.post(
        f"/v1/studies/{study['id']}/comparisons",
        json=comparison_batch(),
        headers=headers,
    )
    assert posted.status_code == 200, posted.text
    assert posted.json()["inserted"] == 1
    quotas = anonymous.get(f"/v1/studies/{study['id']}/quotas", headers=headers)
    assert quotas.status_code == 200


def test_labeler_cannot_read_or_manage(client, anonymous, make_study) -> None:
    study = make_study(client)
    headers = bearer(issue(client, "labeler", [study["id"]])["key"])

    denied = [
        ("GET", "/v1/studies", None),
        ("POST", "/v1/studies", {"name": "x"}),
        ("GET", f"/v1/studies/{study['id']}", None),
        ("GET", f"/v1/studies/{study['id']}/comparisons", None),
        ("GET", f"/v1/studies/{study['id']}/model", None),
        ("POST", f"/v1/studies/{study['id']}/fits", None),
        ("POST", f"/v1/studies/{study['id']}/policy", {"contexts": []}),
        ("GET", "/v1/keys", None),
    ]
    for method, path, body in denied:
        response = anonymous.request(method, path, json=body, headers=headers)
        assert_problem(response, 403)


def test_labeler_of_other_study_is_403(client, anonymous, make_study) -> None:
    mine = make_study(client)
    other = make_study(client)
    headers = bearer(issue(client, "labeler", [mine["id"]])["key"])

    posted = anonymous.post(
        f"/v1/studies/{other['id']}/comparisons",
        json=comparison_batch(),
        headers=headers,
    )
    quotas = anonymous.get(f"/v1/studies/{other['id']}/quotas", headers=headers)

    assert_problem(posted, 403)
    assert_problem(quotas, 403)
    export = client.get(f"/v1/studies/{other['id']}/comparisons").json()
    assert export["items"] == []


def test_403_does_not_reveal_study_existence(client, anonymous, make_study) -> None:
    mine = make_study(client)
    other = make_study(client)
    headers = bearer(issue(client, "labeler", [mine["id"]])["key"])

    existing = anonymous.get(f"/v1/studies/{other['id']}/quotas", headers=headers)
    missing = anonymous.get(f"/v1/studies/{MISSING_STUDY}/quotas", headers=headers)

    assert_problem(existing, 403)
    assert_problem(missing, 403)
    assert existing.json()["detail"] == missing.json()["detail"]


def test_admin_sees_404_for_missing_study(client) -> None:
    assert_problem(client.get(f"/v1/studies/{MISSING_STUDY}"), 404)


# --- timing-safe comparison and lookup by hash -------------------------------


def test_keys_are_compared_with_compare_digest(client, anonymous, monkeypatch) -> None:
    created = issue(client, "reader")
    calls: list[tuple[str, str]] = []
    compare_digest = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(auth_keys.hmac, "compare_digest", spy)

    response = anonymous.get("/v1/studies", headers=bearer(created["key"]))

    assert response.status_code == 200
    digest = hashlib.sha256(created["key"].encode()).hexdigest()
    # One comparison against the bootstrap key, one against the stored row.
    assert len(calls) == 2
    assert all(a == digest for a, _ in calls)
    assert (digest, digest) in calls
    assert all(created["key"] not in pair for pair in calls)


def test_key_lookup_goes_by_hash(client, anonymous, app) -> None:
    created = issue(client, "reader")
    parameters: list[Any] = []

    def record(conn, cursor, statement, params, context, executemany):
        parameters.append((statement, params))

    engine = app.state.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = anonymous.get("/v1/studies", headers=bearer(created["key"]))
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert response.status_code == 200
    digest = hashlib.sha256(created["key"].encode()).hexdigest()
    lookups = [(s, p) for s, p in parameters if "api_keys" in s]
    assert len(lookups) == 1
    assert digest in str(lookups[0][1])
    assert all(created["key"] not in str(p) for _, p in parameters)


# --- auth switched off -------------------------------------------------------


def test_auth_disabled_on_loopback_lets_requests_in(database_url, monkeypatch, caplog):
    monkeypatch.setenv("PREFBUDGET_AUTH_DISABLED", "true")
    with caplog.at_level("WARNING", logger="app.auth.dependencies"):
        app = create_app(Settings(database_url=database_url, host="127.0.0.1"))

    assert any("auth.disabled" in record.getMessage() for record in caplog.records)
    with TestClient(app) as anonymous:
        assert anonymous.get("/v1/studies").status_code == 200
        assert anonymous.get("/v1/keys").status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
def test_auth_disabled_is_refused_off_loopback(database_url, monkeypatch, host):
    monkeypatch.setenv("PREFBUDGET_AUTH_DISABLED", "true")

    with pytest.raises(AuthConfigurationError, match="loopback"):
        create_app(Settings(database_url=database_url, host=host))


def test_auth_is_on_by_default_off_loopback(database_url) -> None:
    app = create_app(Settings(database_url=database_url, host="0.0.0.0"))

    with TestClient(app) as anonymous:
        assert_problem(anonymous.get("/v1/studies"), 401)


def test_short_admin_key_is_rejected(database_url, monkeypatch) -> None:
    monkeypatch.setenv("PREFBUDGET_ADMIN_KEY", "short")

    with pytest.raises(ValueError, match="too short"):
        create_app(Settings(database_url=database_url))
