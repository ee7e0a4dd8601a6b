"""Input validation of the study, key, fit and policy endpoints, and the OpenAPI spec.

Every case here once gave 500, a silently wrong result or an inconsistent error
body: NUL characters (PostgreSQL cannot store them), unbounded numbers, budgets
that can never be fitted, lax type coercion, non-finite policy numbers, naive
timestamps and framework error bodies.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pytest
from conftest import study_body
from fastapi.exceptions import RequestValidationError

from app.jobs.config import FitQueueSettings
from app.jobs.runner import run_pending
from app.main import _validation_errors
from app.problems import ValidationProblem
from app.schemas.common import MAX_ABS_FEATURE
from app.schemas.studies import MAX_BUDGET, MAX_DIMENSION
from app.services.policy import _check_finite_result
from solvers.algorithms import SolverSettings
from solvers.policy import PolicyResult
from solvers.relevance import solve_relevance_lasso

PROBLEM = "application/problem+json"
INVALID_JSON = "the request body is not valid JSON"
UTC_SUFFIX = re.compile(r"(Z|\+00:00)$")


@pytest.fixture
def client(app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A test client whose app does not run fits by itself."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("PREFBUDGET_RUN_FITS_IN_PROCESS", "false")
    with TestClient(app) as test_client:
        yield test_client


def errors_of(response: Any) -> dict[str, str]:
    assert response.headers["content-type"] == PROBLEM, response.text
    return {error["field"]: error["reason"] for error in response.json()["errors"]}


def post_study(client: Any, **overrides: Any) -> Any:
    return client.post("/v1/studies", json=study_body(**overrides))


def post_labels(client: Any, study_id: str, counts: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    rows = [
        {"task": task, "features": rng.standard_normal(4).tolist(), "label": 1.0}
        for task, n in counts.items()
        for _ in range(n)
    ]
    response = client.post(
        f"/v1/studies/{study_id}/comparisons", json={"comparisons": rows}
    )
    assert response.status_code == 200, response.text


def post_raw(client: Any, path: str, content: bytes) -> Any:
    return client.post(
        path, content=content, headers={"content-type": "application/json"}
    )


# ---------------------------------------------------------------------------
# NUL characters and malformed ids


NUL_STUDIES = [
    ("name", {"name": "bad\x00name"}),
    ("source_tasks.1", {"source_tasks": ["a", "b\x00", "c"]}),
    ("target_task", {"target_task": "t\x00"}),
]


@pytest.mark.parametrize(("field", "overrides"), NUL_STUDIES)
def test_study_string_with_nul_is_422(client, field, overrides):
    response = post_study(client, **overrides)

    assert response.status_code == 422
    assert "NUL" in errors_of(response)[field]


def test_key_name_with_nul_is_422(client):
    response = client.post("/v1/keys", json={"name": "k\x00", "scope": "reader"})

    assert response.status_code == 422
    assert "NUL" in errors_of(response)["name"]


def test_key_study_id_with_nul_is_422(client):
    body = {"name": "k", "scope": "labeler", "studies": ["a\x00b"]}

    response = client.post("/v1/keys", json=body)

    assert response.status_code == 422
    assert "NUL" in errors_of(response)["studies.0"]


def test_key_study_id_not_uuid_is_not_found(client):
    body = {"name": "k", "scope": "labeler", "studies": ["not-a-uuid"]}

    response = client.post("/v1/keys", json=body)

    assert response.status_code == 422
    assert "not found" in errors_of(response)["studies.0"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/studies/a%00b"),
        ("GET", "/v1/studies/a%00b/quotas"),
        ("GET", "/v1/studies/a%00b/fits"),
        ("POST", "/v1/studies/a%00b/fits"),
        ("GET", "/v1/studies/a%00b/model"),
        ("GET", "/v1/keys/a%00b"),
        ("DELETE", "/v1/keys/a%00b"),
    ],
)
def test_path_id_with_nul_is_404(client, method, path):
    response = client.request(method, path)

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


def test_fit_id_with_nul_is_404(client, make_study):
    study = make_study(client)

    response = client.get(f"/v1/studies/{study['id']}/fits/a%00b")

    assert response.status_code == 404
    assert response.json()["type"] == "urn:prefbudget:problem:not-found"


def test_study_cursor_with_nul_id_is_400(client):
    import base64

    cursor = base64.urlsafe_b64encode(b"2024-01-01T00:00:00+00:00|a\x00b").decode()

    response = client.get("/v1/studies", params={"cursor": cursor})

    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM


# ---------------------------------------------------------------------------
# Upper bounds


@pytest.mark.parametrize("dimension", [MAX_DIMENSION + 1, 2**31, 2**63, 10**30])
def test_dimension_above_maximum_is_422(client, dimension):
    response = post_study(client, dimension=dimension)

    assert response.status_code == 422
    assert str(MAX_DIMENSION) in errors_of(response)["dimension"]


def test_dimension_at_maximum_is_accepted(client):
    assert post_study(client, dimension=MAX_DIMENSION).status_code == 201


@pytest.mark.parametrize("key", ["source", "target", "pilot_source", "pilot_target"])
@pytest.mark.parametrize("value", [MAX_BUDGET + 1, 2**63])
def test_budget_above_maximum_is_422(client, key, value):
    budget = {"source": 30, "target": 10, "pilot_source": 12, "pilot_target": 6}

    response = post_study(client, budget=budget | {key: value})

    assert response.status_code == 422
    assert str(MAX_BUDGET) in errors_of(response)[f"budget.{key}"]


def test_budget_at_maximum_is_accepted(client):
    budget = {
        "source": MAX_BUDGET,
        "target": MAX_BUDGET,
        "pilot_source": MAX_BUDGET,
        "pilot_target": MAX_BUDGET,
    }

    assert post_study(client, budget=budget).status_code == 201


# ---------------------------------------------------------------------------
# Budgets that could never be fitted


def _stated_minimum(reason: str) -> int:
    match = re.search(r"at least (\d+)", reason)
    assert match, reason
    return int(match.group(1))


def test_known_relevance_source_budget_states_working_minimum(client):
    relevance = {"a": 5.0, "b": 0.0, "c": 0.0}

    response = post_study(client, relevance=relevance, budget={"source": 2}, rank=None)

    assert response.status_code == 422
    reason = errors_of(response)["budget.source"]
    assert "no label to source task(s) 'c'" in reason
    minimum = _stated_minimum(reason)
    # Every budget from the stated minimum on gives every task a label.
    for source in range(minimum, minimum + 8):
        accepted = post_study(
            client, relevance=relevance, budget={"source": source}, rank=None
        )
        assert accepted.status_code == 201, (source, accepted.text)
        quotas = client.get(f"/v1/studies/{accepted.json()['id']}/quotas").json()
        planned = [task["planned"] for task in quotas["tasks"][:3]]
        assert min(planned) >= 1, (source, planned)


def test_pilot_source_budget_states_working_minimum(client):
    prior = {"a": 10.0, "b": 0.0, "c": 1.0}
    budget = {"source": 30, "target": 10, "pilot_source": 3, "pilot_target": 6}

    response = post_study(client, prior=prior, budget=budget)

    assert response.status_code == 422
    reason = errors_of(response)["budget.pilot_source"]
    minimum = _stated_minimum(reason)
    assert minimum > 3
    accepted = post_study(
        client, prior=prior, budget=budget | {"pilot_source": minimum}
    )
    assert accepted.status_code == 201, accepted.text
    quotas = client.get(f"/v1/studies/{accepted.json()['id']}/quotas").json()
    assert min(task["planned"] for task in quotas["tasks"]) >= 1


@pytest.mark.parametrize(
    ("field", "budget"),
    [
        ("budget.source", {"source": 5, "target": 10, "pilot_source": 12}),
        ("budget.target", {"source": 30, "target": 0, "pilot_source": 12}),
        ("budget.target", {"source": 30, "pilot_source": 12}),
        ("budget.pilot_target", {"source": 30, "target": 10, "pilot_source": 12}),
    ],
)
def test_active_budget_too_small_is_422(client, field, budget):
    budget = {"pilot_target": 0} | budget

    response = post_study(client, budget=budget)

    assert response.status_code == 422
    assert "at least" in errors_of(response)[field]


def test_active_budget_two_per_task_accepted(client):
    budget = {"source": 6, "target": 1, "pilot_source": 3, "pilot_target": 1}

    assert post_study(client, budget=budget).status_code == 201


# ---------------------------------------------------------------------------
# Algorithm 1 takes no target labels


def test_known_relevance_target_budget_is_rejected(client):
    response = post_study(
        client,
        relevance={"a": 1, "b": 1, "c": 1},
        budget={"source": 30, "target": 5},
    )

    assert response.status_code == 422
    assert "uses no target labels" in errors_of(response)["budget.target"]


def test_known_relevance_pilot_budget_is_rejected(client):
    response = post_study(
        client,
        relevance={"a": 1, "b": 1, "c": 1},
        budget={"source": 30, "pilot_source": 5},
    )

    assert response.status_code == 422
    assert "no pilot phase" in errors_of(response)["budget.pilot_source"]


def test_known_relevance_target_defaults_to_zero(client):
    response = post_study(
        client, relevance={"a": 1, "b": 1, "c": 1}, budget={"source": 30}
    )

    assert response.status_code == 201
    assert response.json()["budget"]["target"] == 0


# ---------------------------------------------------------------------------
# Strict types


STRICT_CASES = [
    ("rank", {"rank": "1"}),
    ("rank", {"rank": 1.0}),
    ("rank", {"rank": True}),
    ("dimension", {"dimension": "4"}),
    ("dimension", {"dimension": True}),
    (
        "budget.source",
        {
            "budget": {
                "source": "30",
                "target": 10,
                "pilot_source": 12,
                "pilot_target": 6,
            }
        },
    ),
    (
        "budget.target",
        {
            "budget": {
                "source": 30,
                "target": True,
                "pilot_source": 12,
                "pilot_target": 6,
            }
        },
    ),
    ("prior.a", {"prior": {"a": "1", "b": 1, "c": 1}}),
    ("prior.a", {"prior": {"a": True, "b": 1, "c": 1}}),
    ("name", {"name": 5}),
    ("settings.strict_phase_split", {"settings": {"strict_phase_split": "yes"}}),
    ("settings.strict_phase_split", {"settings": {"strict_phase_split": 1}}),
    ("settings.ridge_scale", {"settings": {"ridge_scale": True}}),
    ("settings.ridge_scale", {"settings": {"ridge_scale": "2"}}),
    ("settings.max_rank", {"settings": {"max_rank": 2.5}}),
    ("settings.rank_candidates", {"settings": {"rank_candidates": ["1"]}}),
    ("settings.rank_candidates", {"settings": {"rank_candidates": "12"}}),
    ("settings.confidence_level", {"settings": {"confidence_level": 0}}),
]


@pytest.mark.parametrize(("field", "overrides"), STRICT_CASES)
def test_wrongly_typed_value_is_422_naming_field(client, field, overrides):
    response = post_study(client, **overrides)

    assert response.status_code == 422
    assert field in errors_of(response), response.json()["errors"]


def test_relevance_string_value_is_422(client):
    response = post_study(
        client, relevance={"a": "1", "b": 1, "c": 1}, budget={"source": 30}
    )

    assert response.status_code == 422
    assert "relevance.a" in errors_of(response)


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        (
            "relevance.a",
            {"relevance": {"a": 1e300, "b": 1, "c": 1}, "budget": {"source": 30}},
        ),
        (
            "relevance.b",
            {"relevance": {"a": 1, "b": -2e6, "c": 1}, "budget": {"source": 30}},
        ),
        ("prior.c", {"prior": {"a": 1, "b": 1, "c": 1e308}}),
        ("prior.a", {"prior": {"a": -1, "b": 1, "c": 1}}),
    ],
)
def test_out_of_range_weight_is_422(client, field, overrides):
    response = post_study(client, **overrides)

    assert response.status_code == 422
    assert field in errors_of(response), response.json()["errors"]


def test_valid_settings_are_stored_as_given(client):
    settings = {
        "strict_phase_split": True,
        "rank_candidates": [1, 2],
        "ridge_scale": 2,
        "lasso_penalty": None,
    }

    response = post_study(client, settings=settings)

    assert response.status_code == 201, response.text
    assert response.json()["settings"] == settings


def test_settings_description_lists_every_solver_setting(client):
    schema = client.get("/openapi.json").json()
    text = schema["components"]["schemas"]["StudyCreate"]["properties"]["settings"][
        "description"
    ]

    for field in dataclasses.fields(SolverSettings):
        assert f"`{field.name}`" in text
    assert "`strict_phase_split`" in text


# ---------------------------------------------------------------------------
# Policy numbers


def test_policy_action_above_feature_bound_is_422(client, make_study):
    study = make_study(client)
    actions = [[1e200, 0, 0, 0], [-1e200, 0, 0, 0], [0, 0, 0, 0]]
    body = {"contexts": [{"actions": [[0, 0, 0, 0]]}, {"actions": actions}]}

    response = client.post(f"/v1/studies/{study['id']}/policy", json=body)

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert {(error["index"], error["field"]) for error in errors} == {
        (1, "actions.0"),
        (1, "actions.1"),
    }
    assert f"{MAX_ABS_FEATURE:g}" in errors[0]["reason"]


def test_policy_radius_above_bound_is_422(client, make_study):
    study = make_study(client)
    body = {"contexts": [{"actions": [[0, 0, 0, 0]]}], "confidence_radius": 1e300}

    response = client.post(f"/v1/studies/{study['id']}/policy", json=body)

    assert response.status_code == 422
    assert "confidence_radius" in errors_of(response)


def test_policy_at_feature_bound_returns_finite_numbers(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 4, "b": 4, "c": 4, "t": 6})
    run_pending(
        client.app.state.session_factory,
        FitQueueSettings(run_fits_in_process=False),
        "validation-test",
    )
    big = MAX_ABS_FEATURE
    actions = [[big, big, -big, big], [-big, -big, big, -big], [big, 0, 0, 0]]

    for mode in ("pessimistic", "lower_confidence_bound", "greedy"):
        response = client.post(
            f"/v1/studies/{study['id']}/policy",
            json={"contexts": [{"actions": actions}], "mode": mode},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        numbers = [body["value"], body["stochastic_value"], body["gap"]]
        numbers += [
            body["decisions"][0]["estimate"],
            body["decisions"][0]["lower_bound"],
        ]
        assert all(isinstance(number, float) for number in numbers), body


def test_non_finite_policy_result_is_rejected():
    result = PolicyResult(
        actions=np.array([0, 1]),
        estimates=np.array([1.0, np.inf]),
        lower_bounds=np.array([np.nan, 0.0]),
        probabilities=[np.array([1.0]), np.array([0.0, 1.0])],
        value=-np.inf,
        stochastic_value=0.0,
        n_iter=1,
        gap=0.0,
        converged=True,
        mode="greedy",
    )

    with pytest.raises(ValidationProblem) as problem:
        _check_finite_result(result)

    fields = {(error.index, error.field) for error in problem.value.errors}
    assert fields == {(1, "estimate"), (0, "lower_bound"), (None, "value")}


# ---------------------------------------------------------------------------
# Manual fits


def test_fit_body_invalid_json_is_422(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 1, "b": 1, "c": 1, "t": 1})

    response = post_raw(client, f"/v1/studies/{study['id']}/fits", b"{not json")

    assert response.status_code == 422
    assert response.json()["detail"] == INVALID_JSON


def test_fit_body_unknown_member_is_422(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 1, "b": 1, "c": 1, "t": 1})

    response = client.post(f"/v1/studies/{study['id']}/fits", json={"rank": 2})

    assert response.status_code == 422
    assert "rank" in errors_of(response)


def test_fit_with_empty_object_is_queued(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 1, "b": 1, "c": 1, "t": 1})

    response = client.post(f"/v1/studies/{study['id']}/fits", json={})

    assert response.status_code == 202
    assert response.json()["status"] == "queued"


def test_second_fit_while_pending_is_409_naming_fit(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 1, "b": 1, "c": 1, "t": 1})
    first = client.post(f"/v1/studies/{study['id']}/fits").json()["id"]

    second = client.post(f"/v1/studies/{study['id']}/fits")

    assert second.status_code == 409
    assert second.headers["content-type"] == PROBLEM
    problem = second.json()
    assert problem["fit_id"] == first
    assert first in problem["detail"]
    assert len(client.get(f"/v1/studies/{study['id']}/fits").json()["items"]) == 1


def test_fit_after_pending_fit_finished_is_queued(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 1, "b": 1, "c": 1, "t": 1})
    client.post(f"/v1/studies/{study['id']}/fits")
    run_pending(
        client.app.state.session_factory,
        FitQueueSettings(run_fits_in_process=False),
        "validation-test",
    )

    response = client.post(f"/v1/studies/{study['id']}/fits")

    assert response.status_code == 202, response.text


def test_fit_with_unlabeled_task_is_422_naming_it(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 2, "c": 1})

    response = client.post(f"/v1/studies/{study['id']}/fits")

    assert response.status_code == 422
    errors = errors_of(response)
    assert set(errors) == {"tasks.b", "tasks.t"}
    assert "'b' has no labels" in errors["tasks.b"]
    assert client.get(f"/v1/studies/{study['id']}/fits").json()["items"] == []


def test_known_relevance_fit_needs_no_target_labels(client, make_study):
    study = make_study(
        client, relevance={"a": 1, "b": 1, "c": 1}, budget={"source": 30}, rank=None
    )
    post_labels(client, study["id"], {"a": 1, "b": 1, "c": 1})

    response = client.post(f"/v1/studies/{study['id']}/fits")

    assert response.status_code == 202, response.text


# ---------------------------------------------------------------------------
# Timestamps


def test_key_timestamps_are_utc_everywhere(client):
    created = client.post("/v1/keys", json={"name": "k", "scope": "reader"}).json()
    client.delete(f"/v1/keys/{created['id']}")

    listed = client.get("/v1/keys").json()["items"]
    fetched = client.get(f"/v1/keys/{created['id']}").json()

    entry = next(item for item in listed if item["id"] == created["id"])
    for stamp in (
        created["created_at"],
        entry["created_at"],
        entry["revoked_at"],
        fetched["created_at"],
        fetched["revoked_at"],
    ):
        assert UTC_SUFFIX.search(stamp), stamp


def test_study_and_fit_timestamps_are_utc(client, make_study):
    study = make_study(client)
    post_labels(client, study["id"], {"a": 1, "b": 1, "c": 1, "t": 1})
    fit = client.post(f"/v1/studies/{study['id']}/fits").json()

    fetched = client.get(f"/v1/studies/{study['id']}").json()

    assert UTC_SUFFIX.search(fetched["created_at"])
    assert UTC_SUFFIX.search(fetched["updated_at"])
    assert UTC_SUFFIX.search(fetched["latest_fit"]["created_at"])
    assert UTC_SUFFIX.search(fit["created_at"])


# ---------------------------------------------------------------------------
# Relevance sign of zero


def test_lasso_relevance_has_no_negative_zero():
    # Soft thresholding of negative coordinates below the penalty gives -0.0.
    result = solve_relevance_lasso(
        np.eye(3), np.array([-0.01, 2.0, -0.02]), np.eye(3), 0.5, np.ones(3), 100.0
    )

    assert result.relevance[0] == 0.0
    assert result.relevance[2] == 0.0
    assert not np.signbit(result.relevance).any()


# ---------------------------------------------------------------------------
# Error bodies


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "body",
    [
        _nested(100_000),
        b'{"name": "\xff"}',
        b"{not json",
        b'{"dimension": ' + b"9" * 5000 + b"}",
    ],
    ids=["deep", "utf8", "syntax", "huge-int"],
)
@pytest.mark.parametrize(
    "path",
    [
        "/v1/studies",
        "/v1/keys",
        "/v1/studies/{study}/fits",
        "/v1/studies/{study}/policy",
    ],
)
def test_unparsable_body_is_422_invalid_json(client, make_study, body, path):
    study = make_study(client)

    response = post_raw(client, path.format(study=study["id"]), body)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["detail"] == INVALID_JSON
    assert problem["type"] == "urn:prefbudget:problem:validation-error"
    assert problem["errors"][0]["field"] == "body"
    assert "set_int_max_str_digits" not in response.text


def test_huge_integer_reason_says_too_large(client):
    response = post_raw(client, "/v1/studies", b'{"dimension": ' + b"9" * 5000 + b"}")

    assert "too large" in errors_of(response)["body"]


def test_method_not_allowed_uses_problem_type(client):
    response = client.put("/v1/studies")

    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:prefbudget:problem:method-not-allowed"
    assert response.json()["title"] == "Method not allowed"


def test_unknown_path_uses_problem_type(client):
    response = client.get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.json()["type"] == "urn:prefbudget:problem:not-found"


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("reader", "a reader key takes no studies"),
        ("admin", "an admin key takes no studies"),
    ],
)
def test_key_scope_message_reads_cleanly(client, make_study, scope, message):
    study = make_study(client)

    response = client.post(
        "/v1/keys", json={"name": "k", "scope": scope, "studies": [study["id"]]}
    )

    assert response.status_code == 422
    assert errors_of(response)["studies"].startswith(message)


def test_labeler_key_without_studies_names_field(client):
    response = client.post("/v1/keys", json={"name": "k", "scope": "labeler"})

    assert response.status_code == 422
    assert errors_of(response)["studies"].startswith(
        "a labeler key needs at least one study"
    )


def test_value_error_prefix_is_stripped():
    error = {
        "type": "value_error",
        "loc": ("body", "field"),
        "msg": "Value error, something is wrong",
        "input": None,
    }

    (rendered,) = _validation_errors(RequestValidationError([error]))

    assert rendered.field == "field"
    assert rendered.reason == "something is wrong"


# ---------------------------------------------------------------------------
# OpenAPI document


def _schema_properties(node: Any, path: str) -> list[tuple[str, dict]]:
    """Return every (path, property schema) pair under a JSON schema node."""
    found: list[tuple[str, dict]] = []
    if not isinstance(node, dict):
        return found
    for name, spec in (node.get("properties") or {}).items():
        found.append((f"{path}.{name}", spec))
        found += _schema_properties(spec, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        found += _schema_properties(node.get(key), f"{path}[]")
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(key) or []:
            found += _schema_properties(sub, path)
    return found


def _operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def test_openapi_describes_every_property_and_parameter(client):
    schema = client.get("/openapi.json").json()

    undescribed = [
        path
        for name, component in schema["components"]["schemas"].items()
        for path, spec in _schema_properties(component, name)
        if not spec.get("description")
    ]
    undescribed += [
        f"{method} {path} {parameter['name']}"
        for path, method, operation in _operations(schema)
        for parameter in operation.get("parameters", [])
        if not parameter.get("description")
    ]
    assert undescribed == []


def test_openapi_errors_are_problem_details(client):
    schema = client.get("/openapi.json").json()
    problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}

    for path, method, operation in _operations(schema):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            assert response["content"] == {
                "application/problem+json": {"schema": problem_ref}
            }, (method, path, status)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in operation["responses"], (method, path)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_openapi_declares_bearer_security(client):
    schema = client.get("/openapi.json").json()

    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, method, operation in _operations(schema):
        if path.startswith("/v1/"):
            assert operation["security"] == [{"bearerAuth": []}], (method, path)
        else:
            assert "security" not in operation, (method, path)


def test_openapi_info_and_route_texts(client, settings):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]

    assert schema["info"]["title"] == "prefbudget API"
    assert schema["info"]["version"] == "1.0.0"
    assert "label budget" in schema["info"]["description"]
    assert paths["/v1/keys/{key_id}"]["get"]["responses"]["404"]["description"] == (
        "The key does not exist."
    )
    fit = paths["/v1/studies/{study_id}/fits/{fit_id}"]["get"]
    assert fit["responses"]["404"]["description"] == "The study or fit does not exist."
    export = paths["/v1/studies/{study_id}/comparisons"]["get"]
    limit = next(p for p in export["parameters"] if p["name"] == "limit")
    assert str(settings.export_default_limit) in limit["description"]
    assert str(settings.export_max_limit) in limit["description"]


# Solver settings checked against the study --------------------------------------

SMALL_STUDY = {
    "name": "small study",
    "dimension": 2,
    "source_tasks": ["a", "b"],
    "target_task": "t",
    "relevance": None,
    "prior": None,
    "budget": {"source": 20, "target": 4, "pilot_source": 10, "pilot_target": 4},
}


@pytest.mark.parametrize("relevance", [None, {"a": 1.0, "b": 1.0}])
def test_rank_candidate_over_ceiling_is_422(client, relevance):
    body = {**SMALL_STUDY, "relevance": relevance, "rank": None}
    if relevance is not None:
        body["budget"] = {"source": 20, "target": 4}
    body["settings"] = {"rank_candidates": [1, 99]}

    response = client.post("/v1/studies", json=body)

    assert response.status_code == 422, response.text
    reason = errors_of(response)["settings.rank_candidates"]
    assert "[99]" in reason
    assert "min(d, M) = 2" in reason


def test_rank_candidates_within_ceiling_are_accepted(client):
    body = {**SMALL_STUDY, "rank": None, "settings": {"rank_candidates": [1, 2]}}

    response = client.post("/v1/studies", json=body)

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "overrides", [{"max_rank": 1}, {"rank_candidates": [99]}, {"max_rank": 99}]
)
def test_fixed_rank_ignores_rank_selection_settings(client, overrides):
    # The solver reads max_rank and rank_candidates only to choose a rank,
    # so a study with a fixed rank cannot fail on them.
    body = {**SMALL_STUDY, "rank": 2, "settings": overrides}

    response = client.post("/v1/studies", json=body)

    assert response.status_code == 201, response.text
