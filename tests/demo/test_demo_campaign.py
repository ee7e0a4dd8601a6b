"""The campaign loop against a scripted service that follows the API contract.

The scripted service keeps only counts: it plans quotas with Active-Sample,
splits each batch with ``split_batch``, and "fits" at the first study poll
after a phase's quotas are met. That is enough to check that the demo follows
the quotas exactly, waits for each phase's fit and stops at ``complete``.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from app.demo.campaign import Budget, run_campaign, task_name
from app.demo.client import ServiceClient, ServiceError
from app.demo.data import ComparisonStream, FeatureMap, UserRatings
from solvers.allocation import active_sample, split_batch


class ScriptedService:
    """Counts labels per phase and task and moves phases like the real service."""

    def __init__(self, *, fail_phase: str | None = None) -> None:
        self.fail_phase = fail_phase
        self.study: dict = {}
        self.phase = "pilot"
        self.collected: dict[tuple[str, str], int] = {}
        self.fits: dict[str, dict] = {}
        self.latest_fit: dict | None = None
        self.relevance: dict[str, float] = {}
        self.quota_batches: list[int] = []

    def planned(self) -> dict[str, int]:
        body = self.study
        sources = body["source_tasks"]
        budget = body["budget"]
        if self.phase == "pilot":
            counts = active_sample(budget["pilot_source"], np.zeros(len(sources)))
            target = budget["pilot_target"]
        else:
            weights = np.array([self.relevance[name] for name in sources])
            counts = active_sample(budget["source"], weights)
            target = budget["target"]
        plan = dict(zip(sources, (int(count) for count in counts), strict=True))
        plan[body["target_task"]] = int(target)
        return plan

    def remaining(self) -> dict[str, int]:
        return {
            task: planned - self.collected.get((self.phase, task), 0)
            for task, planned in self.planned().items()
        }

    def maybe_fit(self) -> None:
        if self.phase == "complete" or any(self.remaining().values()):
            return
        fit_id = f"fit-{len(self.fits) + 1}"
        status = "failed" if self.phase == self.fail_phase else "succeeded"
        fit = {"id": fit_id, "status": status, "phase": self.phase, "error": None}
        if status == "failed":
            fit["error"] = "scripted failure"
        self.fits[fit_id] = fit
        self.latest_fit = fit
        if status == "succeeded":
            sources = self.study["source_tasks"]
            # The first source gets all the relevance, so Active-Sample is uneven.
            self.relevance = {name: float(i == 0) for i, name in enumerate(sources)}
            self.phase = "main" if self.phase == "pilot" else "complete"

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/studies":
            self.study = json.loads(request.content)
            return httpx.Response(201, json={"id": "s1", "phase": self.phase})
        if request.method == "GET" and path == "/v1/studies/s1/quotas":
            batch = int(request.url.params["batch"])
            self.quota_batches.append(batch)
            if self.phase == "complete":
                return httpx.Response(200, json={"phase": "complete", "tasks": []})
            remaining = self.remaining()
            split = split_batch(batch, list(remaining.values()))
            return httpx.Response(
                200,
                json={
                    "phase": self.phase,
                    "tasks": [
                        {"task": task, "remaining": count}
                        for task, count in remaining.items()
                    ],
                    "next_batch": dict(
                        zip(remaining, (int(n) for n in split), strict=True)
                    ),
                },
            )
        if request.method == "POST" and path == "/v1/studies/s1/comparisons":
            rows = json.loads(request.content)["comparisons"]
            for row in rows:
                key = (self.phase, row["task"])
                self.collected[key] = self.collected.get(key, 0) + 1
            return httpx.Response(200, json={"inserted": len(rows), "duplicates": 0})
        if request.method == "GET" and path == "/v1/studies/s1":
            self.maybe_fit()
            return httpx.Response(
                200,
                json={"id": "s1", "phase": self.phase, "latest_fit": self.latest_fit},
            )
        if request.method == "GET" and path.startswith("/v1/studies/s1/fits/"):
            return httpx.Response(200, json=self.fits[path.rsplit("/", 1)[1]])
        if request.method == "GET" and path == "/v1/studies/s1/model":
            return httpx.Response(
                200,
                json={"theta": [0.0, 0.0], "relevance": self.relevance, "fit_id": "x"},
            )
        return httpx.Response(404, json={"title": "Not Found"})


def make_users(
    n_sources: int,
) -> tuple[FeatureMap, ComparisonStream, list[ComparisonStream]]:
    features = np.random.default_rng(0).standard_normal((30, 2))
    feature_map = FeatureMap(np.arange(30), features, ["a", "b"], 1, np.arange(3))
    ratings = np.arange(30) % 5 + 1.0

    def user(user_id: int) -> ComparisonStream:
        rated = UserRatings(user_id, np.arange(30), ratings)
        return ComparisonStream(rated, feature_map, user_id)

    return feature_map, user(1), [user(10 + m) for m in range(n_sources)]


BUDGET = Budget(pilot_source=40, pilot_target=7, source=90, target=11)


def run_scripted(service: ScriptedService):
    feature_map, target, sources = make_users(4)
    client = ServiceClient(
        "http://scripted", transport=httpx.MockTransport(service.handle)
    )
    return run_campaign(
        client,
        name="scripted",
        feature_map=feature_map,
        target=target,
        sources=sources,
        budget=BUDGET,
        rank=1,
        batch_size=25,
        poll_interval=0.0,
        progress=False,
    )


def test_campaign_meets_every_quota_exactly():
    service = ScriptedService()
    result = run_scripted(service)
    sources = [task_name(10 + m) for m in range(4)]

    assert service.phase == "complete"
    assert [result.collected.count(name, ("pilot",)) for name in sources] == [10] * 4
    assert result.collected.count(task_name(1), ("pilot",)) == 7
    assert result.collected.count(task_name(1), ("main",)) == 11
    # Active-Sample with all relevance on the first source: 90 * (1/2 + 1/8) for
    # it and 90 / 8 for each other source, rounded to whole labels.
    main_counts = [result.collected.count(name, ("main",)) for name in sources]
    assert main_counts == active_sample(90, [1, 0, 0, 0]).tolist()
    assert sum(main_counts) == 90


def test_campaign_asks_for_batches_and_records_models():
    service = ScriptedService()
    result = run_scripted(service)
    assert set(service.quota_batches) == {25}
    assert set(result.models) == {"pilot", "main"}
    assert [fit["phase"] for fit in result.fits] == ["pilot", "main"]
    assert result.rounds >= (BUDGET.total + 24) // 25


def test_campaign_posts_stream_in_order():
    service = ScriptedService()
    result = run_scripted(service)
    X, y = result.collected.task(task_name(1), 2)
    _, target, _ = make_users(4)
    expected = target.first(18)
    np.testing.assert_array_equal(X, expected.X)
    np.testing.assert_array_equal(y, expected.y)


def test_failed_fit_raises_with_its_error():
    service = ScriptedService(fail_phase="main")
    with pytest.raises(ServiceError, match="scripted failure"):
        run_scripted(service)
