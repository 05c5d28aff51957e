"""Generate N recorded exchanges quickly and time the usage reports over them (not part of the test suite).

    python -m proxy.bench.queries --db sqlite+aiosqlite:///bench.db --rows 1000000
    python -m proxy.bench.queries --db postgresql+asyncpg://postgres@127.0.0.1:5432/test --rows 1000000

Rows go in through the driver's bulk path (``executemany`` on sqlite3, ``COPY`` on asyncpg) into a freshly
migrated schema, with the rollups the writer would have built, spread over ``--days`` days with a
realistic mix of models, keys, sessions, statuses and unknown costs. Then each report is run
``--repeat`` times through the same query layer as ``proxy usage``; the median is printed.
``--keep`` reuses an already filled database.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.record.exchange import new_exchange_id
from proxy.store import browse, db, migrate, queries, rollup
from proxy.store.filters import Filters
from proxy.store.tables import exchanges, usage_daily, usage_hourly

MODELS = [
    ("gpt-4o-2024-08-06", "gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", 0.15, 0.6),
    ("gpt-4.1", "gpt-4.1", 2.0, 8.0),
    ("o3-mini", "o3-mini", 1.1, 4.4),
    ("anthropic/claude-sonnet-4", "anthropic/claude-sonnet-4", 3.0, 15.0),
    ("deepseek/deepseek-r1", "deepseek/deepseek-r1", 0.55, 2.19),
    ("meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.3-70B-Instruct", 0.0, 0.0),
    ("text-embedding-3-small", "text-embedding-3-small", 0.02, 0.0),
]
COLUMNS = [c.name for c in exchanges.columns]
REPORTS = [["model", "day"], [], ["model"], ["day"], ["hour"], ["key"], ["session"], ["status", "upstream"]]


def generate(n: int, days: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    span = (end - start).total_seconds()
    keys = [f"fp_{i:016x}" for i in range(20)]
    key_weights = [1 / (i + 1) for i in range(len(keys))]  # a few keys carry most traffic
    sessions = [f"suite-{i}" for i in range(500)]
    for i in range(n):
        started = start + timedelta(seconds=span * i / n)
        model, requested, pin, pout = MODELS[rng.randrange(len(MODELS))]
        roll = rng.random()
        status = 200 if roll < 0.95 else (429 if roll < 0.97 else (500 if roll < 0.985 else 499))
        ok = status == 200
        prompt = rng.randint(20, 4000) if ok else None
        completion = rng.randint(1, 800) if ok else None
        cached = (prompt // 2 if rng.random() < 0.3 else 0) if prompt else None
        duration = rng.lognormvariate(6.5, 0.8)
        stream = rng.random() < 0.6
        if not ok:
            cost, source = None, "none"
        elif pin == 0.0:
            cost, source = None, "unknown"
        else:
            cost, source = ((prompt or 0) * pin + (completion or 0) * pout) / 1e6, "computed"
        yield {
            "id": new_exchange_id(),
            "session_id": rng.choice(sessions) if rng.random() < 0.3 else None,
            "started_at": started,
            "finished_at": started + timedelta(milliseconds=duration),
            "duration_ms": duration,
            "ttft_ms": duration * rng.uniform(0.05, 0.3) if stream and ok else None,
            "api": "chat",
            "method": "POST",
            "path": "/v1/chat/completions",
            "upstream": "openrouter" if "/" in requested else "default",
            "model_requested": requested,
            "model": model if ok else None,
            "status": status,
            "upstream_status": status if status != 499 else 200,
            "stream": stream,
            "outcome": "complete" if ok else ("client_disconnected" if status == 499 else "complete"),
            "finish_reason": "stop" if ok else None,
            "error": None if ok else f"status {status}",
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": (prompt or 0) + (completion or 0) if ok else None,
            "cached_tokens": cached,
            "reasoning_tokens": 0 if ok else None,
            "cache_write_tokens": None,
            "cache_write_1h_tokens": None,
            "usage_source": "provider" if ok else "missing",
            "cost_usd": cost,
            "cost_source": source,
            "price_ref": "bundled:" + requested if source == "computed" else None,
            "key_fingerprint": rng.choices(keys, key_weights)[0],
            "end_user": f"user-{rng.randrange(100)}" if rng.random() < 0.5 else None,
            "match_key": None,
        }


def _sqlite_value(name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


class Rollup:
    """The rollups the writer would have built for the generated rows."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[tuple[Any, ...], rollup.Acc]] = {unit: {} for unit, _ in rollup.TABLES}

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        for unit, groups in self.groups.items():
            key = rollup.rollup_key(row, unit)
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = rollup.Acc()
            acc.add_exchange(row)
        return row

    async def write(self, engine: AsyncEngine) -> str:
        sizes = []
        async with engine.begin() as conn:
            for unit, table in rollup.TABLES:
                groups = self.groups[unit]
                rows = [{**dict(zip(rollup.KEY, key, strict=True)), **acc.values()} for key, acc in groups.items()]
                for i in range(0, len(rows), 2000):
                    await conn.execute(rollup.upsert(engine.dialect.name, table), rows[i : i + 2000])
                sizes.append(f"{len(rows)} {table.name}")
        return ", ".join(sizes)


def fill_sqlite(path: str, n: int, days: int, roll: Rollup) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    sql = f"INSERT INTO exchanges ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    batch: list[tuple[Any, ...]] = []
    for row in map(roll.add, generate(n, days)):
        batch.append(tuple(_sqlite_value(c, row[c]) for c in COLUMNS))
        if len(batch) == 50_000:
            conn.executemany(sql, batch)
            batch.clear()
    conn.executemany(sql, batch)
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


async def fill_postgres(url: str, n: int, days: int, roll: Rollup) -> None:
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, database=u.database
    )
    try:
        records = (tuple(row[c] for c in COLUMNS) for row in map(roll.add, generate(n, days)))
        batch: list[tuple[Any, ...]] = []
        for record in records:
            batch.append(record)
            if len(batch) == 100_000:
                await conn.copy_records_to_table("exchanges", records=batch, columns=COLUMNS)
                batch.clear()
        await conn.copy_records_to_table("exchanges", records=batch, columns=COLUMNS)
        await conn.execute("ANALYZE exchanges")
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> None:
    engine = db.create_engine(args.db)
    try:
        if not args.keep:
            await migrate.upgrade(engine)
            async with engine.begin() as conn:
                await conn.execute(exchanges.delete())
                await conn.execute(usage_hourly.delete())
                await conn.execute(usage_daily.delete())
            t = time.perf_counter()
            roll = Rollup()
            if engine.dialect.name == "sqlite":
                fill_sqlite(make_url(args.db).database or "", args.rows, args.days, roll)
            else:
                await fill_postgres(args.db, args.rows, args.days, roll)
            groups = await roll.write(engine)
            print(f"generated {args.rows} rows ({groups}) in {time.perf_counter() - t:.1f} s")
        async with engine.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(exchanges))
        print(f"{engine.dialect.name}: {total} exchanges")
        for dims in REPORTS:
            timings = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                async with engine.connect() as conn:
                    rows = await queries.usage(conn, dims)
                timings.append(time.perf_counter() - t)
            label = ",".join(dims) or "(totals)"
            print(f"usage --by {label:<16} {len(rows):>6} rows  median {statistics.median(timings):.3f} s")
        since = datetime.now(UTC) - timedelta(days=1)
        t = time.perf_counter()
        async with engine.connect() as conn:
            rows = await queries.usage(conn, ["model", "hour"], Filters(since=since))
        print(f"usage --by model,hour --since 24h   {len(rows):>4} rows  {time.perf_counter() - t:.3f} s")
        await time_browsing(engine, args.repeat)
    finally:
        await engine.dispose()


async def _median(engine: AsyncEngine, repeat: int, fn: Any) -> tuple[Any, float]:
    timings, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        async with engine.connect() as conn:
            result = await fn(conn)
        timings.append(time.perf_counter() - t)
    return result, statistics.median(timings)


async def time_browsing(engine: AsyncEngine, repeat: int) -> None:
    """The dashboard's reads beyond the reports: keyset pages (first, from the middle, errors only), the
    model catalogue, one session."""
    async with engine.connect() as conn:
        total = int(await conn.scalar(select(func.count()).select_from(exchanges)) or 0)
        middle = (
            await conn.execute(
                select(exchanges.c.started_at, exchanges.c.id)
                .order_by(exchanges.c.started_at.desc(), exchanges.c.id.desc())
                .offset(total // 2)
                .limit(1)
            )
        ).first()
        session = await conn.scalar(select(exchanges.c.session_id).where(exchanges.c.session_id.is_not(None)).limit(1))
    cursor = browse.Cursor(middle.started_at, middle.id).encode() if middle else None
    cases = [
        ("page of 50, newest", lambda c: browse.page_exchanges(c, limit=50)),
        ("page of 50, mid-table", lambda c: browse.page_exchanges(c, limit=50, before=cursor)),
        ("page of 50, errors only", lambda c: browse.page_exchanges(c, Filters(errors_only=True))),
        ("model catalogue", browse.models),
        ("one session", lambda c: browse.session_detail(c, session or "")),
    ]
    for label, fn in cases:
        _, seconds = await _median(engine, repeat, fn)
        print(f"dashboard: {label:<24} median {seconds:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="database URL (the schema is migrated; exchanges are replaced)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="reuse the rows already there")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
