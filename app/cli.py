"""Command line: ``prefbudget serve | worker | db upgrade | db downgrade | demo``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

from pydantic import ValidationError

from app.logs import configure_logging
from app.settings import Settings

logger = logging.getLogger(__name__)

# Exit status of a command whose settings are invalid, as for a usage error.
CONFIGURATION_ERROR_STATUS = 2


class ConfigurationError(Exception):
    """Invalid setting, with a message that names the variable and the fix."""


def describe_validation_error(error: ValidationError) -> str:
    """Return the errors of a settings model on one line, naming each variable."""
    parts = []
    for item in error.errors():
        name = "PREFBUDGET_" + "_".join(str(part) for part in item["loc"]).upper()
        message = item["msg"].removeprefix("Value error, ")
        parts.append(message if name in message else f"{name}: {message}")
    return "; ".join(parts)


def _configuration_error(command: str, message: str) -> int:
    """Write the one-line error of invalid settings; return the exit status.

    It goes to standard error directly, because the logging settings may be
    the invalid ones.
    """
    sys.stderr.write(f"prefbudget {command}: invalid configuration: {message}\n")
    return CONFIGURATION_ERROR_STATUS


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("database_url", "host", "port", "log_level", "log_format"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy database URL (default: PREFBUDGET_DATABASE_URL, "
        "else sqlite:///./prefbudget.db).",
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``prefbudget`` command."""
    parser = argparse.ArgumentParser(
        prog="prefbudget",
        description="Active multi-task label budgeting for RLHF, as a REST service.",
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="Lowest level of log records written (default: PREFBUDGET_LOG_LEVEL).",
    )
    parser.add_argument(
        "--log-format",
        choices=["plain", "json"],
        help="Log line format (default: PREFBUDGET_LOG_FORMAT, else plain).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="Apply pending migrations, then serve the API with uvicorn."
    )
    serve.add_argument(
        "--host", help="Listen address (default: PREFBUDGET_HOST, else 127.0.0.1)."
    )
    serve.add_argument(
        "--port", type=int, help="TCP port (default: PREFBUDGET_PORT, else 8000)."
    )
    _add_database_url(serve)
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        help="Do not apply pending migrations at start.",
    )

    db = commands.add_parser("db", help="Manage the database schema.")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="Apply migrations.")
    upgrade.add_argument(
        "--revision", default="head", help="Target revision (default: head)."
    )
    _add_database_url(upgrade)
    downgrade = db_commands.add_parser("downgrade", help="Revert migrations.")
    downgrade.add_argument(
        "--revision",
        default="-1",
        help="Target revision: an id, -N steps, or base (default: -1).",
    )
    _add_database_url(downgrade)
    current = db_commands.add_parser(
        "current", help="Print the database revision and the head revision."
    )
    _add_database_url(current)

    from app import worker_cli

    worker_cli.add_arguments(
        commands.add_parser("worker", help="Run queued fit jobs until stopped.")
    )

    commands.add_parser(
        "demo",
        help="Run the MovieLens demo campaign (options: prefbudget demo --help).",
        add_help=False,
    )
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app.auth.dependencies import AuthConfigurationError
    from app.db import migrations
    from app.jobs.config import queue_settings
    from app.main import create_app

    # create_app checks the auth settings and creates the engine without
    # connecting, so invalid settings stop the command before any migration.
    try:
        queue_settings(settings)
        app = create_app(settings)
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error)) from error
    except AuthConfigurationError as error:
        raise ConfigurationError(str(error)) from error
    if settings.migrate_on_start and not args.no_migrate:
        migrations.upgrade(settings.database_url)
    # Move the ~170,000 start-up objects out of the collector's reach, so no full
    # collection over them (~100 ms) runs in the middle of a request.
    gc.freeze()
    logger.info("serve.start host=%s port=%d", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level.lower(),
    )
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from app import worker_cli
    from app.jobs.config import queue_settings

    try:
        queue_settings(settings)
        process = worker_cli.WorkerProcessSettings()
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error)) from error
    return worker_cli.run(args, settings, process)


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from app.db import migrations
    from app.db.engine import create_db_engine

    try:
        if args.db_command == "upgrade":
            migrations.upgrade(settings.database_url, args.revision)
        elif args.db_command == "downgrade":
            migrations.downgrade(settings.database_url, args.revision)
        else:
            engine = create_db_engine(settings.database_url)
            try:
                current = sorted(migrations.current_revisions(engine)) or ["none"]
            finally:
                engine.dispose()
            heads = sorted(migrations.head_revisions())
            sys.stdout.write(
                f"current: {', '.join(current)}\nhead: {', '.join(heads)}\n"
            )
    except SQLAlchemyError as exc:
        logger.error("db.%s failed: %s", args.db_command, exc)
        return 1
    return 0


def _demo(argv: list[str]) -> int:
    try:
        from app.demo.cli import add_arguments, run
    except ImportError as exc:
        logger.error(
            "the demo is not available: %s; install the demo extra with "
            "pip install -e '.[demo]'",
            exc,
        )
        return 2
    parser = argparse.ArgumentParser(
        prog="prefbudget demo", description="Run the MovieLens demo campaign."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """Run the ``prefbudget`` command; return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    command = " ".join(filter(None, [args.command, getattr(args, "db_command", None)]))
    try:
        settings = _settings(args)
    except ValidationError as error:
        return _configuration_error(command, describe_validation_error(error))
    if args.command == "demo":
        # The demo's terminal output is its progress bars and result table:
        # log warnings only, unless PREFBUDGET_LOG_LEVEL sets another level.
        level = os.environ.get("PREFBUDGET_LOG_LEVEL", "WARNING")
        configure_logging(level.upper(), settings.log_format)
        logging.getLogger("httpx").setLevel(
            max(logging.WARNING, logging.getLogger().level)
        )
        return _demo(rest)

    configure_logging(settings.log_level, settings.log_format)
    # Alembic logs one INFO line per plugin it sets up, on every migration run.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "serve":
            return _serve(args, settings)
        if args.command == "worker":
            return _worker(args, settings)
        return _db(args, settings)
    except ConfigurationError as error:
        return _configuration_error(command, str(error))


if __name__ == "__main__":
    sys.exit(main())
