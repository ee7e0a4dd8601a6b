"""Start-up checks of `prefbudget serve`, `worker` and `db upgrade` as real processes.

Invalid settings must stop a command with exit status 2 and one line on
standard error before it touches the database. A worker must exit with one
line when its database is unreachable or not at the head revision.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(arguments: list[str], cwd: Path, **variables: str):
    """Run `prefbudget ARGUMENTS` in ``cwd`` with only ``variables`` of PREFBUDGET_*."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PREFBUDGET_")
    }
    environment.update(variables, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


BAD_SERVE_CONFIGURATIONS = [
    pytest.param(
        ["--host", "0.0.0.0"],
        {"PREFBUDGET_AUTH_DISABLED": "true"},
        "PREFBUDGET_AUTH_DISABLED",
        id="auth-disabled-off-loopback",
    ),
    pytest.param(
        [],
        {"PREFBUDGET_ADMIN_KEY": "short"},
        "PREFBUDGET_ADMIN_KEY",
        id="short-admin-key",
    ),
    pytest.param(
        [],
        {"PREFBUDGET_FIT_POLL_SECONDS": "-1"},
        "PREFBUDGET_FIT_POLL_SECONDS",
        id="negative-poll-seconds",
    ),
    pytest.param(
        [], {"PREFBUDGET_PORT": "abc"}, "PREFBUDGET_PORT", id="port-not-integer"
    ),
]


@pytest.mark.parametrize(
    ("arguments", "variables", "variable"), BAD_SERVE_CONFIGURATIONS
)
def test_serve_rejects_bad_configuration(tmp_path, arguments, variables, variable):
    database = tmp_path / "prefbudget.db"
    result = run_cli(
        ["serve", *arguments, "--database-url", f"sqlite:///{database}"],
        tmp_path,
        **variables,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prefbudget serve: invalid configuration: ")
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
    assert not database.exists()


def test_serve_keeps_admin_key_secret(tmp_path):
    result = run_cli(["serve"], tmp_path, PREFBUDGET_ADMIN_KEY="short-secret")
    assert result.returncode == 2
    assert "short-secret" not in result.stderr


def test_db_upgrade_rejects_bad_configuration(tmp_path):
    database = tmp_path / "prefbudget.db"
    result = run_cli(
        ["db", "upgrade", "--database-url", f"sqlite:///{database}"],
        tmp_path,
        PREFBUDGET_SQLITE_BUSY_TIMEOUT_MS="-5",
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prefbudget db upgrade: invalid configuration: ")
    assert "PREFBUDGET_SQLITE_BUSY_TIMEOUT_MS" in lines[0]
    assert not database.exists()


def test_worker_rejects_bad_configuration(tmp_path):
    database = tmp_path / "prefbudget.db"
    result = run_cli(
        ["worker", "--database-url", f"sqlite:///{database}"],
        tmp_path,
        PREFBUDGET_WORKER_METRICS_PORT="0",
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "PREFBUDGET_WORKER_METRICS_PORT" in lines[0]
    assert not database.exists()


def test_db_upgrade_logs_no_alembic_plugins(tmp_path):
    database = tmp_path / "prefbudget.db"
    result = run_cli(
        ["db", "upgrade", "--database-url", f"sqlite:///{database}"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "setup plugin" not in result.stderr
    assert "Running upgrade" in result.stderr


def test_worker_exits_on_missing_directory(tmp_path):
    url = f"sqlite:///{tmp_path / 'missing' / 'prefbudget.db'}"
    result = run_cli(["worker", "--database-url", url], tmp_path)
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert "worker.database_not_ready: cannot connect to the database" in lines[0]
    assert "unable to open database file" in lines[0]


def test_worker_exits_on_unmigrated_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'prefbudget.db'}"
    result = run_cli(["worker", "--database-url", url], tmp_path)
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert "schema is at revision none" in lines[0]
    assert "prefbudget db upgrade" in lines[0]


@pytest.mark.postgres
def test_worker_exits_on_missing_postgres_database(tmp_path):
    server = os.environ.get("PREFBUDGET_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("PREFBUDGET_TEST_POSTGRES_URL is not set")
    from sqlalchemy.engine import make_url

    url = make_url(server).set(database="prefbudget_missing_db_x")
    result = run_cli(
        ["worker", "--database-url", url.render_as_string(hide_password=False)],
        tmp_path,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert 'database "prefbudget_missing_db_x" does not exist' in lines[0]
