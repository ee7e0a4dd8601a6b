"""Database layer: SQLAlchemy models, engine and session set-up, and queries."""

# Registers the api_keys table on `metadata`. A plain import (no names taken)
# works whichever of app.db and app.auth.models is imported first.
import app.auth.models  # noqa: F401
from app.db.base import Base, metadata
from app.db.models import Comparison, Fit, Study, Task

__all__ = ["Base", "Comparison", "Fit", "Study", "Task", "metadata"]
