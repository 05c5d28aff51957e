"""Alembic migrations, installed as ``proxy.migrations`` (pyproject maps this folder there): not a
top-level package of its own in site-packages. Alembic reads ``env.py`` and ``versions/`` by path."""
