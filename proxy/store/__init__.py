"""Storage: engine, schema, writes, reads, queries, rollups, prune, and running the migrations.

Owns: every SQL statement the proxy runs (no other room writes SQL). The schema itself is made only by
the Alembic revisions under ``migrations/``; ``tables`` is the application's view of it.
May import: leaves (``record.exchange``). Never aiohttp, never a room above it.
"""
