"""Probes, OpenAPI description, migrations and the CLI's db commands."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text

from app.cli import main as cli_main
from app.db import metadata, migrations
from app.main import create_app
from app.settings import Settings

OWN_TABLES = {"studies", "tasks", "comparisons", "fits", "label_counts"}
# The revision before label_counts existed.
BEFORE_LABEL_COUNTS = "0002"


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["revision"] == sorted(migrations.head_revisions())


def test_readyz_is_503_before_migrations(empty_database_url, monkeypatch):
    monkeypatch.setenv("PREFBUDGET_AUTH_DISABLED", "true")
    with TestClient(create_app(Settings(database_url=empty_database_url))) as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "prefbudget db upgrade" in response.json()["detail"]


def test_readyz_is_503_when_database_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFBUDGET_AUTH_DISABLED", "true")
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite'}"
    with TestClient(create_app(Settings(database_url=url))) as client:
        response = client.get("/readyz")

    assert response.status_code == 503


def test_unknown_route_is_problem(client):
    response = client.get("/v2/nothing")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_migrations_upgrade_and_downgrade(empty_database_url):
    engine = create_engine(empty_database_url)
    try:
        migrations.upgrade(empty_database_url)
        assert OWN_TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            differences = compare_metadata(
                MigrationContext.configure(connection), metadata
            )
        own = [d for d in differences if any(table in repr(d) for table in OWN_TABLES)]
        assert own == []
        assert migrations.current_revisions(engine) == set(migrations.head_revisions())

        migrations.downgrade(empty_database_url, "base")
        assert OWN_TABLES.isdisjoint(inspect(engine).get_table_names())
        assert migrations.current_revisions(engine) == set()
    finally:
        engine.dispose()


def _seed_labels(engine) -> None:
    """Store two studies with labels in several tasks and phases, through SQL."""
    now = "2026-01-01 00:00:00"
    with engine.begin() as connection:
        for study in ("s1", "s2"):
            connection.execute(
                text(
                    "INSERT INTO studies (id, name, dimension, algorithm, phase, "
                    "budget, settings, created_at, updated_at) VALUES (:id, 'n', 1, "
                    "'active', 'main', '{}', '{}', :now, :now)"
                ),
                {"id": study, "now": now},
            )
        tasks = [(1, "s1", "a"), (2, "s1", "t"), (3, "s2", "a")]
        for task_id, study, name in tasks:
            connection.execute(
                text(
                    "INSERT INTO tasks (id, study_id, name, role, position) "
                    "VALUES (:id, :study, :name, 'source', 0)"
                ),
                {"id": task_id, "study": study, "name": name},
            )
        labels = (
            [(1, "pilot")] * 3 + [(1, "main")] * 2 + [(2, "main")] + [(3, "pilot")] * 4
        )
        for number, (task_id, phase) in enumerate(labels):
            connection.execute(
                text(
                    "INSERT INTO comparisons (study_id, task_id, client_id, "
                    "features, label, phase, content_hash) VALUES (:study, :task, "
                    ":client, :features, 1.0, :phase, 'h')"
                ),
                {
                    "study": "s2" if task_id == 3 else "s1",
                    "task": task_id,
                    "client": f"c{number}",
                    "features": b"\x00" * 8,
                    "phase": phase,
                },
            )


def _label_counts(engine) -> set[tuple[str, int, str, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT study_id, task_id, phase, count FROM label_counts")
        )
        return {tuple(row) for row in rows}


def test_label_counts_migration_backfills(empty_database_url):
    engine = create_engine(empty_database_url)
    expected = {
        ("s1", 1, "pilot", 3),
        ("s1", 1, "main", 2),
        ("s1", 2, "main", 1),
        ("s2", 3, "pilot", 4),
    }
    try:
        migrations.upgrade(empty_database_url, BEFORE_LABEL_COUNTS)
        _seed_labels(engine)

        migrations.upgrade(empty_database_url)
        assert _label_counts(engine) == expected

        migrations.downgrade(empty_database_url, BEFORE_LABEL_COUNTS)
        assert "label_counts" not in inspect(engine).get_table_names()
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT COUNT(*) FROM comparisons"))
            assert stored.scalar_one() == 10

        migrations.upgrade(empty_database_url)
        assert _label_counts(engine) == expected
    finally:
        engine.dispose()


def test_cli_db_commands(empty_database_url, capsys):
    assert cli_main(["db", "upgrade", "--database-url", empty_database_url]) == 0
    assert cli_main(["db", "current", "--database-url", empty_database_url]) == 0
    output = capsys.readouterr().out
    heads = ", ".join(sorted(migrations.head_revisions()))
    assert f"current: {heads}" in output
    assert (
        cli_main(
            [
                "db",
                "downgrade",
                "--revision",
                "base",
                "--database-url",
                empty_database_url,
            ]
        )
        == 0
    )
    assert cli_main(["db", "current", "--database-url", empty_database_url]) == 0
    assert "current: none" in capsys.readouterr().out


def test_openapi_describes_every_field(client):
    schema = client.get("/openapi.json").json()

    assert schema["info"]["title"] == "prefbudget API"
    components = schema["components"]["schemas"]
    for name in (
        "StudyCreate",
        "StudyOut",
        "Budget",
        "ComparisonIn",
        "ComparisonBatch",
        "IngestResult",
        "ComparisonPage",
        "ProblemDetails",
    ):
        for field, spec in components[name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
    post = schema["paths"]["/v1/studies/{study_id}/comparisons"]["post"]
    assert "ComparisonBatch" in str(post["requestBody"])
    assert "422" in post["responses"]
    assert "application/problem+json" in post["responses"]["422"]["content"]
