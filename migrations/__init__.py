"""Alembic migrations for the recording proxy (packaged so `pip install .` can run them)."""
