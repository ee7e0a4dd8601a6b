"""Alembic environment: resolves the database URL and runs the migrations.

The URL comes from ``config.attributes["database_url"]`` when a caller set it
(``app.db.migrations`` does), otherwise from ``PREFBUDGET_DATABASE_URL`` via
``app.settings``. SQLite runs in batch mode, because it cannot alter most
constraints in place.
"""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import Connection

from app.db import metadata
from app.db.engine import create_db_engine, is_sqlite
from app.settings import Settings

config = context.config

# Configure logging from the ini only for the plain `alembic` command line;
# the prefbudget CLI has set up logging already.
if config.config_file_name is not None and not config.attributes.get("database_url"):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    return config.attributes.get("database_url") or Settings().database_url


def _configure(connection: Connection | None, url: str) -> None:
    context.configure(
        connection=connection,
        url=None if connection is not None else url,
        target_metadata=metadata,
        render_as_batch=is_sqlite(url),
        compare_type=True,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout without connecting (``alembic upgrade --sql``)."""
    _configure(None, _database_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Connect and apply the migrations in one transaction."""
    url = _database_url()
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            _configure(connection, url)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
