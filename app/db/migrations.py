"""Run and inspect the Alembic migrations that ship in the ``migrations`` package."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """Build an Alembic config for the packaged migrations and ``database_url``.

    The URL travels as a config attribute rather than an ini option, so a
    percent sign in a password needs no escaping.
    """
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    logger.info("db.upgrade revision=%s", revision)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Revert migrations down to ``revision``."""
    logger.info("db.downgrade revision=%s", revision)
    command.downgrade(alembic_config(database_url), revision)


@functools.cache
def head_revisions() -> frozenset[str]:
    """Return the head revision ids of the packaged migration scripts."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return frozenset(script.get_heads())


def current_revisions(engine: Engine) -> set[str]:
    """Return the revision ids recorded in the database (empty when unmigrated)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        return set(context.get_current_heads())
