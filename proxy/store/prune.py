"""Retention: delete old exchanges, or only their bodies, in small batches.

Invariants:
- Each batch is its own short transaction over at most ``batch_size`` ids chosen by the time index, so a
  prune never holds a long lock on SQLite's single writer or PostgreSQL's tables; live recording goes on
  between batches.
- Bodies are deleted before their exchange rows in the same transaction (no reliance on cascade), so the
  database is consistent after every batch, whatever stops the prune.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.store.tables import exchange_bodies, exchanges


@dataclass
class PruneResult:
    exchanges: int = 0
    bodies: int = 0
    batches: int = 0


async def count_older(engine: AsyncEngine, cutoff: datetime, *, bodies_only: bool) -> int:
    if bodies_only:
        query = (
            select(func.count())
            .select_from(exchange_bodies.join(exchanges, exchanges.c.id == exchange_bodies.c.exchange_id))
            .where(exchanges.c.started_at < cutoff)
        )
    else:
        query = select(func.count()).select_from(exchanges).where(exchanges.c.started_at < cutoff)
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def prune(
    engine: AsyncEngine, cutoff: datetime, *, bodies_only: bool = False, batch_size: int = 2000
) -> PruneResult:
    """Delete exchanges (with their bodies) or just bodies of exchanges started before ``cutoff``."""
    result = PruneResult()
    if bodies_only:
        pick = (
            select(exchange_bodies.c.exchange_id)
            .join(exchanges, exchanges.c.id == exchange_bodies.c.exchange_id)
            .where(exchanges.c.started_at < cutoff)
            .order_by(exchanges.c.started_at)
            .limit(batch_size)
        )
    else:
        pick = (
            select(exchanges.c.id)
            .where(exchanges.c.started_at < cutoff)
            .order_by(exchanges.c.started_at)
            .limit(batch_size)
        )
    while True:
        async with engine.begin() as conn:
            ids = list((await conn.scalars(pick)).all())
            if not ids:
                return result
            gone = await conn.execute(delete(exchange_bodies).where(exchange_bodies.c.exchange_id.in_(ids)))
            result.bodies += gone.rowcount or 0
            if not bodies_only:
                gone = await conn.execute(delete(exchanges).where(exchanges.c.id.in_(ids)))
                result.exchanges += gone.rowcount or 0
        result.batches += 1
        await asyncio.sleep(0)  # let recording interleave between batches
