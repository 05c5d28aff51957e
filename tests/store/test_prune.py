"""Pruning bodies and exchanges in batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.store.prune import count_older, prune
from tests.support import Database
from tests.support.traffic import AGES_DAYS, seed_aged


async def test_prune_bodies_then_exchanges_in_batches(database: Database) -> None:
    await seed_aged(database)
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
