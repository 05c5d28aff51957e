"""Alembic environment.

The proxy always hands in an open connection (``config.attributes["connection"]``) from its own async
engine via ``run_sync``, so migrations run inside a running event loop (``proxy serve``, tests) and on
SQLite and PostgreSQL alike. ``render_as_batch`` lets SQLite apply ALTERs by table copy.

Nothing here or in ``versions/`` imports the application: a revision describes the schema as it was when
it was written, so later changes to ``proxy.store.tables`` can never change what an old step does.
Revisions are written by hand (there is no autogenerate target); ``tests/store/test_migrate.py`` checks
that the head matches the application's tables.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `proxy db upgrade` (it supplies the connection)")

context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
