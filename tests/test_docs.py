"""Checks that the documentation lists what the code reads."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_recipe_lint():
    spec = importlib.util.spec_from_file_location(
        "lint_container_recipe", REPO / "ci" / "lint_container_recipe.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_readme_lists_every_setting():
    lint = _load_recipe_lint()
    problems: list[str] = []
    lint.lint_configuration((REPO / "Dockerfile").read_text(), problems)
    assert problems == []


def test_readme_names_the_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()
