"""Alembic migrations of the prefbudget database (``alembic.ini`` lives here)."""
