"""Automatic retention inside a running proxy."""

from __future__ import annotations

import asyncio

from tests.support import Database, ProxyFactory
from tests.support.traffic import AGES_DAYS, seed_aged


async def test_automatic_retention_runs_in_the_proxy(database: Database, start_proxy: ProxyFactory) -> None:
    await seed_aged(database)
    proxy = await start_proxy(retention={"max_age": "30d", "bodies_max_age": "3d", "interval": "1h"})
    for _ in range(100):
        if len(await database.rows()) == sum(d <= 30 for d in AGES_DAYS):
            break
        await asyncio.sleep(0.05)
    assert len(await database.rows()) == sum(d <= 30 for d in AGES_DAYS)
    assert len(await database.bodies()) == sum(d <= 3 for d in AGES_DAYS)
    await proxy.client().models.list()  # recording goes on
    assert len(await proxy.rows()) == sum(d <= 30 for d in AGES_DAYS) + 1
