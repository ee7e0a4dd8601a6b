"""Domain services: study rules, ingestion and idempotency.

Services take a session and domain arguments, flush but never commit: the
request's session dependency commits on success and rolls back on error.
"""
