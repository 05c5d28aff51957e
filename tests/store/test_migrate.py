"""Migrations build the schema the models describe, on SQLite and PostgreSQL, and can go down and up again."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql

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
                "method": "GET" if i % 9 == 4 else "POST",
                "path": "/v1/models" if i % 9 == 4 else "/v1/embeddings" if i % 9 == 5 else "/v1/chat/completions",
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


async def rollup_rows(database: Database, name: str) -> list[dict[str, Any]]:
    async with database.engine.connect() as conn:
        result = await conn.exec_driver_sql(f"SELECT * FROM {name}")
        return [dict(r._mapping) for r in result]


def comparable(rows: list[dict[str, Any]], columns: list[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rollup rows keyed by their group (period as an aware UTC time on both backends), costs rounded."""
    out = {}
    for r in rows:
        period = r["period"]
        if isinstance(period, str):
            period = datetime.fromisoformat(period).replace(tzinfo=UTC)
        key = (period.astimezone(UTC), *(r[c] for c in ("model", "model_requested", "upstream", "key_fingerprint")))
        key = (*key, r["status"], r.get("api"))
        out[key] = {c: (round(r[c], 9) if c == "cost_usd" else r[c]) for c in columns}
    return out


async def test_upgrades_backfill_rollups_as_the_writer_would(database: Database) -> None:
    """A database made at revision 0001, holding rows, upgrades step by step: 0002's frozen SQL backfill
    equals what the writer's rollup code computes, and 0004 (rollups by API family) again."""
    await migrate.downgrade(database.engine, "0001_initial")
    rows = old_rows()
    table = sa.table("exchanges", *[sa.column(name) for name in COLUMNS_0001])
    async with database.engine.begin() as conn:
        await conn.execute(table.insert(), rows)
    await migrate.upgrade(database.engine, "0003_replay_links")
    frozen = importlib.import_module("proxy.migrations.versions.0002_usage_rollups")
    old_columns = [*frozen.SUMS, "cost_usd", *rollup.LATENCY, *rollup.TTFT]
    for (_, name), (_, expected) in zip(
        rollup.TABLES, rollup.deltas([{**r, "api": None, "cache_write_tokens": None} for r in rows]), strict=True
    ):
        want = comparable([{**e, "api": None} for e in expected], old_columns)
        assert comparable(await rollup_rows(database, name), old_columns) == want and len(want) > 3

    await migrate.upgrade(database.engine)
    assert await migrate.current_revision(database.engine) == migrate.head_revision()
    stored = await database.rows()
    assert {(r["path"], r["api"]) for r in stored} == {
        ("/v1/chat/completions", "chat"), ("/v1/embeddings", "embeddings"), ("/v1/models", "other")
    }  # fmt: skip
    columns = [*rollup.SUMS, "cost_usd", *rollup.LATENCY, *rollup.TTFT]
    for (_, name), (_, expected) in zip(rollup.TABLES, rollup.deltas(stored), strict=True):
        want = comparable(expected, columns)
        assert comparable(await rollup_rows(database, name), columns) == want and len(want) > 3


async def test_0005_counts_response_bytes_and_keeps_old_bodies(database: Database) -> None:
    """Bodies stored before 0005 were kept whole: after the upgrade they read as not truncated, their
    size not counted, and delivered_bytes holds more than 2 GiB."""
    await migrate.downgrade(database.engine, "0004_api_families")
    rows = old_rows()[:3]
    exchanges = sa.table("exchanges", *[sa.column(name) for name in COLUMNS_0001])
    plain = ("exchange_id", "response_body", "event_count", "decode_errors", "usage_injected", "delivered_bytes")
    headers = [
        sa.column(c, sa.JSON().with_variant(postgresql.JSONB(), "postgresql"))
        for c in ("request_headers", "response_headers")
    ]
    bodies = sa.table("exchange_bodies", *headers, *[sa.column(c) for c in plain])
    async with database.engine.begin() as conn:
        await conn.execute(exchanges.insert(), rows)
        await conn.execute(
            bodies.insert(),
            [
                {
                    "exchange_id": r["id"],
                    "request_headers": {},
                    "response_headers": {},
                    "response_body": b"data: [DONE]\n\n",
                    "event_count": 1,
                    "decode_errors": 0,
                    "usage_injected": False,
                    "delivered_bytes": 7 if i == 0 else None,
                }
                for i, r in enumerate(rows)
            ],
        )
    await migrate.upgrade(database.engine)
    stored = sorted((await database.bodies()).values(), key=lambda b: b["exchange_id"])
    assert [(b["response_bytes"], b["response_truncated"], b["delivered_bytes"]) for b in stored] == [
        (None, False, 7),
        (None, False, None),
        (None, False, None),
    ]
    update = sa.table("exchange_bodies", sa.column("exchange_id"), sa.column("delivered_bytes"))
    async with database.engine.begin() as conn:
        await conn.execute(update.update().where(update.c.exchange_id == rows[1]["id"]).values(delivered_bytes=5 << 30))
    assert any(b["delivered_bytes"] == 5 << 30 for b in (await database.bodies()).values())


async def test_0006_counts_the_exchanges_that_reported_each_column(database: Database) -> None:
    """Rollups written before 0006 summed a column over every exchange with usage. Upgraded, each column
    counts the exchanges that reported it; for exchanges pruned since, a part of the sum that is not 0
    proves they reported it (hand-computed below)."""
    await migrate.downgrade(database.engine, "0003_replay_links")
    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)

    def row(i: int, model: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            **dict.fromkeys(COLUMNS_0001),
            "id": f"00000000-0000-7000-8000-{i:012d}",
            "started_at": hour + timedelta(minutes=i),
            "method": "POST",
            "path": "/v1/responses",
            "upstream": "default",
            "model": model,
            "status": 200,
            "stream": False,
            "outcome": "complete",
            **usage,
            "usage_source": "provider" if usage else "missing",
            "cost_source": "unknown",
        }

    rows = [
        row(1, "m", {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
        row(2, "m", {"total_tokens": 7}),
        row(3, "m", {}),
        row(4, "m", {"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4, "cached_tokens": 0}),  # pruned
        row(5, "t", {"total_tokens": 9}),
        row(6, "t", {"total_tokens": 3}),  # pruned
    ]
    table = sa.table("exchanges", *[sa.column(name) for name in COLUMNS_0001])
    async with database.engine.begin() as conn:
        await conn.execute(table.insert(), rows)
    await migrate.upgrade(database.engine, "0005_response_bytes")  # 0004 fills the rollups
    async with database.engine.begin() as conn:
        await conn.execute(table.delete().where(table.c.id.in_([rows[3]["id"], rows[5]["id"]])))
    await migrate.upgrade(database.engine)

    counts = [f"{n}_reported" for n in rollup.TOKENS]
    # m: prompt 10 kept + 4 pruned (shown by its sum); completion 5 kept, the pruned 0 proves nothing;
    # total 15 + 7 kept + 4 pruned; cached only the pruned 0. t: totals 9 kept + 3 pruned.
    want = {
        "m": dict(zip(counts, (2, 1, 0, 0, 3, 0), strict=True)),
        "t": dict(zip(counts, (0, 0, 0, 0, 2, 0), strict=True)),
    }
    for _, name in rollup.TABLES:
        got = {r["model"]: {c: r[c] for c in counts} for r in await rollup_rows(database, name)}
        assert got == want, name


def test_the_start_up_head_is_alembics() -> None:
    assert migrate.head_revision() == migrate.HEAD
