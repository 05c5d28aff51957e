"""Migrations build the schema the models describe, on SQLite and PostgreSQL, and can go down and up again."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from proxy.store import migrate, rollup
from proxy.store.tables import Base
from tests.support import Database


async def test_head_matches_models(database: Database) -> None:
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    assert diff == []
    assert await migrate.current_revision(database.engine) == migrate.head_revision()


async def test_downgrade_to_base_and_upgrade_again(database: Database) -> None:
    await migrate.downgrade(database.engine, "base")
    assert await migrate.current_revision(database.engine) is None
    await migrate.upgrade(database.engine)
    assert await migrate.current_revision(database.engine) == migrate.head_revision()


# The exchanges columns as revision 0001 made them: rows of an old database, written without the app.
COLUMNS_0001 = (
    "id", "session_id", "started_at", "finished_at", "duration_ms", "ttft_ms", "method", "path", "upstream",
    "model_requested", "model", "status", "upstream_status", "stream", "outcome", "finish_reason", "error",
    "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens", "usage_source",
    "cost_usd", "cost_source", "price_ref", "key_fingerprint", "end_user", "match_key",
)  # fmt: skip


def old_rows() -> list[dict[str, Any]]:
    """Exchanges that reach every branch of the rollup: bucket edges, NULLs, errors, missing usage, 3 days."""
    start = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    durations = [0.2, 1.0, 2**0.25, 2**0.25 - 1e-9, 350.0, 5e7, None]
    rows = []
    for i in range(40):
        missing = i % 5 == 0
        rows.append(
            {
                **dict.fromkeys(COLUMNS_0001),
                "id": f"00000000-0000-7000-8000-{i:012d}",
                "started_at": start + timedelta(minutes=37 * i),
                "duration_ms": durations[i % len(durations)],
                "ttft_ms": None if i % 3 else durations[(i + 2) % len(durations)],
                "method": "POST",
                "path": "/v1/chat/completions",
                "upstream": "default",
                "model_requested": None if i % 7 == 0 else f"m{i % 3}",
                "model": None if i % 4 == 0 else f"m{i % 3}-2026",
                "status": [200, 200, 429, None, 500][i % 5],
                "stream": bool(i % 2),
                "outcome": "complete" if i % 6 else "client_disconnected",
                "prompt_tokens": None if missing else 10 + i,
                "completion_tokens": None if missing else i,
                "total_tokens": None if missing else 10 + 2 * i,
                "cached_tokens": None if missing or i % 2 else 3,
                "reasoning_tokens": None,
                "usage_source": "missing" if missing else "provider",
                "cost_usd": None if i % 4 == 1 else i * 1e-6,
                "cost_source": ["computed", "unknown", "provider", "none"][i % 4],
                "key_fingerprint": None if i % 2 else "fp_abc",
            }
        )
    return rows


async def test_upgrade_from_0001_backfills_rollups_as_the_writer_would(database: Database) -> None:
    """A database made at revision 0001 with rows in it upgrades to head; 0002's frozen SQL backfill equals
    what the writer's rollup code computes for the same rows."""
    await migrate.downgrade(database.engine, "0001_initial")
    rows = old_rows()
    table = sa.table("exchanges", *[sa.column(name) for name in COLUMNS_0001])
    async with database.engine.begin() as conn:
        await conn.execute(table.insert(), [{**r, "started_at": r["started_at"]} for r in rows])
    await migrate.upgrade(database.engine)
    assert await migrate.current_revision(database.engine) == migrate.head_revision()
    frozen = importlib.import_module("proxy.migrations.versions.0002_usage_rollups")
    columns = [*rollup.KEY, *frozen.SUMS, "cost_usd", *rollup.LATENCY, *rollup.TTFT]
    for table_, expected in rollup.deltas(rows):
        async with database.engine.connect() as conn:
            got = [
                dict(r._mapping) for r in await conn.execute(sa.select(table_).order_by(*table_.c[: len(rollup.KEY)]))
            ]
        assert len(got) == len(expected) > 3
        for g, e in zip(got, expected, strict=True):
            assert {c: g[c] for c in columns if c != "cost_usd"} == {c: e[c] for c in columns if c != "cost_usd"}
            assert g["cost_usd"] == pytest.approx(e["cost_usd"])
