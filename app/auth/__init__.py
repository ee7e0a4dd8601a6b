"""API keys: models, hashing, scopes and the FastAPI dependency that checks them.

This package's ``__init__`` imports nothing, because :mod:`app.db` imports
:mod:`app.auth.models` to register the ``api_keys`` table, and anything heavier
here would make that import circular. Import from the submodules instead.
"""
