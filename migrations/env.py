"""Alembic environment.

The proxy always hands in an open connection (``config.attributes["connection"]``) from its own async
engine via ``run_sync``, so migrations run inside a running event loop (``proxy serve``, tests) and on
SQLite and PostgreSQL alike. ``render_as_batch`` lets SQLite apply ALTERs by table copy.
"""

from __future__ import annotations

from alembic import context

from proxy.store.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `proxy db upgrade` (it supplies the connection)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
