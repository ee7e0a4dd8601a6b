"""Scope rules of API keys, checked on route templates without a server."""

from __future__ import annotations

import pytest

from app.auth.keys import (
    Principal,
    generate_key,
    hash_key,
    is_allowed,
    is_loopback_host,
    parse_bearer,
)

STUDY = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"

ADMIN = Principal(key_id="a", name="admin", scope="admin")
READER = Principal(key_id="r", name="reader", scope="reader")
LABELER = Principal(
    key_id="l", name="labeler", scope="labeler", studies=frozenset({STUDY})
)

# (method, route template, whether the path names a study)
ROUTES = [
    ("POST", "/v1/studies", False),
    ("GET", "/v1/studies", False),
    ("GET", "/v1/studies/{study_id}", True),
    ("POST", "/v1/studies/{study_id}/comparisons", True),
    ("POST", "/v1/studies/{study_id}/comparisons/import", True),
    ("GET", "/v1/studies/{study_id}/comparisons", True),
    ("GET", "/v1/studies/{study_id}/quotas", True),
    ("POST", "/v1/studies/{study_id}/fits", True),
    ("GET", "/v1/studies/{study_id}/fits/{fit_id}", True),
    ("GET", "/v1/studies/{study_id}/model", True),
    ("POST", "/v1/studies/{study_id}/policy", True),
    ("DELETE", "/v1/studies/{study_id}", True),
    ("POST", "/v1/keys", False),
    ("GET", "/v1/keys", False),
    ("GET", "/v1/keys/{key_id}", False),
    ("DELETE", "/v1/keys/{key_id}", False),
]

READER_ALLOWED = {
    ("GET", "/v1/studies"),
    ("GET", "/v1/studies/{study_id}"),
    ("GET", "/v1/studies/{study_id}/comparisons"),
    ("GET", "/v1/studies/{study_id}/quotas"),
    ("GET", "/v1/studies/{study_id}/fits/{fit_id}"),
    ("GET", "/v1/studies/{study_id}/model"),
    ("POST", "/v1/studies/{study_id}/policy"),
}
LABELER_ALLOWED = {
    ("POST", "/v1/studies/{study_id}/comparisons"),
    ("POST", "/v1/studies/{study_id}/comparisons/import"),
    ("GET", "/v1/studies/{study_id}/quotas"),
}


@pytest.mark.parametrize(("method", "path", "has_study"), ROUTES)
def test_admin_may_call_every_route(method: str, path: str, has_study: bool) -> None:
    assert is_allowed(ADMIN, method, path, STUDY if has_study else None)


@pytest.mark.parametrize(("method", "path", "has_study"), ROUTES)
def test_reader_may_only_read(method: str, path: str, has_study: bool) -> None:
    expected = (method, path) in READER_ALLOWED
    assert is_allowed(READER, method, path, STUDY if has_study else None) is expected


@pytest.mark.parametrize(("method", "path", "has_study"), ROUTES)
def test_labeler_on_bound_study(method: str, path: str, has_study: bool) -> None:
    expected = (method, path) in LABELER_ALLOWED
    assert is_allowed(LABELER, method, path, STUDY if has_study else None) is expected


@pytest.mark.parametrize(("method", "path"), sorted(LABELER_ALLOWED))
def test_labeler_on_other_study_is_denied(method: str, path: str) -> None:
    assert not is_allowed(LABELER, method, path, OTHER)


def test_unknown_scope_is_denied() -> None:
    stranger = Principal(key_id="x", name="x", scope="superuser")
    assert not is_allowed(stranger, "GET", "/v1/studies", None)


def test_generated_keys_are_distinct_and_long() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("pbk_") and len(key) >= 4 + 43 for key in keys)


def test_hash_key_is_sha256_hex() -> None:
    # SHA-256 of the ASCII string "abc" (FIPS 180-2, appendix B.1).
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_key("abc") == expected


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer pbk_abc", "pbk_abc"),
        ("bearer   pbk_abc ", "pbk_abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_bearer(header: str | None, token: str | None) -> None:
    assert parse_bearer(header) == token


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
