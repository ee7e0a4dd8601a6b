"""Lint the Dockerfile's structure and the configuration the containers get.

Checks, with the standard library and app.settings only (no downloads):

- the Dockerfile has a builder stage and a runtime stage, the builder runs
  docker/install.sh, the runtime stage copies the virtual environment from the
  builder, runs as a non-root user, has a HEALTHCHECK on /readyz, and uses the
  exec (JSON) form for ENTRYPOINT, CMD and HEALTHCHECK;
- every file the Dockerfile copies from the build context exists and is
  admitted by .dockerignore;
- every PREFBUDGET_ variable set in the Dockerfile or docker-compose.yml is a
  field of a settings class under app/ (app.settings.Settings and the
  classes beside it), and every such field has a row in the configuration
  table of README.md.

Exits with status 1 and one line per problem when a check fails.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import pkgutil
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KNOWN_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
    "HEALTHCHECK", "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER",
    "VOLUME", "WORKDIR",
}  # fmt: skip
ENV_VARIABLE = re.compile(r"\bPREFBUDGET_[A-Z0-9_]+\b")
# Variables that configure Compose itself (the published port), not the app.
COMPOSE_ONLY_VARIABLES = {"PREFBUDGET_PUBLISHED_PORT"}


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def find(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining continued lines."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, arguments = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    if pending:
        instructions.append(Instruction("<unterminated>", " ".join(pending), start))
    return instructions


def split_stages(instructions: list[Instruction]) -> list[Stage]:
    stages: list[Stage] = []
    for item in instructions:
        if item.keyword == "FROM":
            words = [w for w in item.arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(item)
    return stages


def copy_sources(item: Instruction) -> list[str]:
    """Return the context paths of a COPY without ``--from`` (JSON or plain form)."""
    words = item.arguments.split()
    if any(word.startswith("--from") for word in words):
        return []
    arguments = [word for word in words if not word.startswith("--")]
    if item.arguments.lstrip().startswith("["):
        arguments = json.loads(item.arguments)
    return arguments[:-1]


def dockerignore_admits(path: str, patterns: list[str]) -> bool:
    """Apply .dockerignore rules in order; the last matching rule wins."""
    admitted = True
    parts = Path(path).parts
    for pattern in patterns:
        negated = pattern.startswith("!")
        rule = pattern[1:] if negated else pattern
        rule = rule.rstrip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, rule) for prefix in prefixes):
            admitted = negated
    return admitted


def lint_dockerfile(problems: list[str]) -> str:
    dockerfile = (REPO / "Dockerfile").read_text()
    instructions = parse_dockerfile(dockerfile)
    for item in instructions:
        if item.keyword not in KNOWN_INSTRUCTIONS:
            problems.append(
                f"Dockerfile:{item.line}: unknown instruction {item.keyword}"
            )

    stages = split_stages(instructions)
    if len(stages) < 2:
        problems.append("Dockerfile: expected a builder stage and a runtime stage")
        return dockerfile
    builder, runtime = stages[0], stages[-1]
    if builder.name is None:
        problems.append("Dockerfile: the builder stage has no name (FROM ... AS name)")

    if not any("docker/install.sh" in run.arguments for run in builder.find("RUN")):
        problems.append("Dockerfile: the builder does not run docker/install.sh")
    copies_venv = any(
        f"--from={builder.name}" in copy.arguments for copy in runtime.find("COPY")
    )
    if not copies_venv:
        problems.append("Dockerfile: the runtime stage copies nothing from the builder")
    if runtime.find("RUN") and any(
        "pip install" in run.arguments for run in runtime.find("RUN")
    ):
        problems.append("Dockerfile: the runtime stage installs packages itself")

    users = runtime.find("USER")
    user = users[-1].arguments.split(":")[0] if users else "root"
    if user in ("root", "0"):
        problems.append("Dockerfile: the runtime stage runs as root")

    healthchecks = runtime.find("HEALTHCHECK")
    if not healthchecks or "/readyz" not in healthchecks[-1].arguments:
        problems.append("Dockerfile: no HEALTHCHECK on /readyz in the runtime stage")
    for keyword in ("ENTRYPOINT", "CMD", "HEALTHCHECK"):
        for item in runtime.find(keyword):
            payload = item.arguments
            if keyword == "HEALTHCHECK":
                payload = payload.partition(" CMD ")[2] or payload
            if not payload.lstrip().startswith("["):
                problems.append(
                    f"Dockerfile:{item.line}: {keyword} is not in exec (JSON) form"
                )

    ignore_file = REPO / ".dockerignore"
    patterns = [
        line.strip()
        for line in ignore_file.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for stage in stages:
        for copy in stage.find("COPY") + stage.find("ADD"):
            for source in copy_sources(copy):
                if not (REPO / source).exists():
                    problems.append(f"Dockerfile:{copy.line}: {source} does not exist")
                elif not dockerignore_admits(source, patterns):
                    problems.append(
                        f"Dockerfile:{copy.line}: .dockerignore excludes {source}"
                    )
    return dockerfile


def settings_variables() -> set[str]:
    """Return the variable of every field of every ``PREFBUDGET_`` settings class.

    Imports each module under app/ (``__main__`` modules excepted, since
    importing them runs them) and collects the pydantic-settings classes.
    """
    from pydantic_settings import BaseSettings

    import app

    variables = set()
    for module_info in pkgutil.walk_packages(app.__path__, "app."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            is_settings = isinstance(value, type) and issubclass(value, BaseSettings)
            if not is_settings or value is BaseSettings:
                continue
            prefix = value.model_config.get("env_prefix", "")
            if prefix != "PREFBUDGET_":
                continue
            variables.update(f"{prefix}{name.upper()}" for name in value.model_fields)
    return variables


def lint_configuration(dockerfile: str, problems: list[str]) -> None:
    known = settings_variables()
    compose = (REPO / "docker-compose.yml").read_text()
    used = set(ENV_VARIABLE.findall(compose)) | set(ENV_VARIABLE.findall(dockerfile))
    for name in sorted(used - known - COMPOSE_ONLY_VARIABLES):
        problems.append(f"{name} is set for the containers but is no Settings field")

    readme = REPO / "README.md"
    table_rows = {
        match
        for line in readme.read_text().splitlines()
        if line.startswith("|")
        for match in ENV_VARIABLE.findall(line.split("|")[1])
    }
    for name in sorted((known | used) - table_rows):
        problems.append(f"{name} has no row in the configuration table of README.md")


def main() -> int:
    problems: list[str] = []
    dockerfile = lint_dockerfile(problems)
    lint_configuration(dockerfile, problems)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print("Dockerfile and configuration table: no problems found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
