"""Retention: `proxy prune` and the automatic sweeper delete in batches, on both databases."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from proxy.record.exchange import Exchange
from proxy.store.prune import count_older, prune
from proxy.store.writes import insert_exchanges
from tests.conftest import Database, ProxyFactory

AGES_DAYS = [0, 1, 5, 12, 25, 40, 40, 90]


async def seed(database: Database) -> list[Exchange]:
    now = datetime.now(UTC)
    batch = []
    for days in AGES_DAYS:
        ex = Exchange(method="POST", path="/v1/chat/completions", status=200, started_at=now - timedelta(days=days))
        ex.request_body = b'{"model":"m"}'
        ex.finish()
        batch.append(ex)
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, batch)
    return batch


async def test_prune_bodies_then_exchanges_in_batches(database: Database) -> None:
    await seed(database)
    cutoff = datetime.now(UTC) - timedelta(days=10)
    older = sum(d > 10 for d in AGES_DAYS)
    assert await count_older(database.engine, cutoff, bodies_only=True) == older

    done = await prune(database.engine, cutoff, bodies_only=True, batch_size=2)
    assert (done.bodies, done.exchanges) == (older, 0) and done.batches == (older + 1) // 2
    assert len(await database.rows()) == len(AGES_DAYS), "usage rows stay"
    assert len(await database.bodies()) == len(AGES_DAYS) - older

    done = await prune(database.engine, datetime.now(UTC) - timedelta(days=30), batch_size=2)
    assert done.exchanges == sum(d > 30 for d in AGES_DAYS)
    rows = await database.rows()
    assert sorted(round((datetime.now(UTC) - r["started_at"]).days) for r in rows) == [0, 1, 5, 12, 25]


async def test_automatic_retention_runs_in_the_proxy(database: Database, start_proxy: ProxyFactory) -> None:
    await seed(database)
    proxy = await start_proxy(retention={"max_age": "30d", "bodies_max_age": "3d", "interval": "1h"})
    for _ in range(100):
        if len(await database.rows()) == sum(d <= 30 for d in AGES_DAYS):
            break
        await asyncio.sleep(0.05)
    assert len(await database.rows()) == sum(d <= 30 for d in AGES_DAYS)
    assert len(await database.bodies()) == sum(d <= 3 for d in AGES_DAYS)
    await proxy.client().models.list()  # recording goes on
    assert len(await proxy.rows()) == sum(d <= 30 for d in AGES_DAYS) + 1


@pytest.mark.parametrize("args", [["--older-than", "soon"], ["--older-than", "20d", "--db", "mysql://x"]])
def test_prune_cli_rejects_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "prune", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


async def test_prune_cli(sqlite_db: Database, tmp_path: Path) -> None:
    await seed(sqlite_db)
    cmd = [sys.executable, "-m", "proxy", "prune", "--db", sqlite_db.url, "--older-than", "20d"]
    dry = await asyncio.to_thread(subprocess.run, [*cmd, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert f"would delete {sum(d > 20 for d in AGES_DAYS)} exchanges" in dry.stdout
    real = await asyncio.to_thread(
        subprocess.run, [*cmd, "--batch-size", "1"], capture_output=True, text=True, timeout=60
    )
    assert real.returncode == 0, real.stderr
    n = sum(d > 20 for d in AGES_DAYS)
    assert f"deleted {n} exchanges and {n} bodies" in real.stdout and f"in {n} batches" in real.stdout
    assert len(await sqlite_db.rows()) == len(AGES_DAYS) - n
