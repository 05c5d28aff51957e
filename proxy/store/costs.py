"""The SQL of re-pricing: exchanges to price again, their new cost columns, and rebuilding rollups.

Invariants:
- Runs inside the caller's transaction (``usage.accounting`` decides what changes; this writes it).
- Provider-reported costs are never selected for re-pricing.
- Rebuilding a day deletes both rollups' rows of that UTC day and adds the day's exchanges again, after
  locking the rollup tables on PostgreSQL so a live writer waits instead of adding to rows being rebuilt
  (on SQLite the transaction's write lock does the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.record.exchange import CostSource
from proxy.store import rollup
from proxy.store.filters import Filters, bind_time, where_clauses
from proxy.store.stored import Stored, read
from proxy.store.tables import exchanges, usage_daily, usage_hourly

X = exchanges.c
_SET_COSTS = (
    update(exchanges)
    .where(X.id == bindparam("row_id"))
    .values(cost_usd=bindparam("cost_usd"), cost_source=bindparam("cost_source"), price_ref=bindparam("price_ref"))
)


async def priced_by_table(conn: AsyncConnection, filters: Filters, after: str, limit: int) -> list[Stored]:
    """Exchanges in ``filters`` whose cost did not come from the provider, in id order after ``after``."""
    not_provider = or_(X.cost_source.is_(None), X.cost_source != str(CostSource.PROVIDER))
    query = (
        select(exchanges).where(*where_clauses(conn, filters), not_provider, X.id > after).order_by(X.id).limit(limit)
    )
    return [read(r._mapping) for r in await conn.execute(query)]


async def set_costs(conn: AsyncConnection, changes: Sequence[dict[str, Any]]) -> None:
    """``changes``: ``{"row_id", "cost_usd", "cost_source", "price_ref"}`` per exchange."""
    if changes:
        await conn.execute(_SET_COSTS, list(changes))


async def rebuild_rollups(conn: AsyncConnection, days: Iterable[datetime]) -> None:
    """Recompute both rollups for the given UTC days from the exchanges."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("LOCK TABLE usage_hourly, usage_daily IN EXCLUSIVE MODE")
    for day in sorted(days):
        start, end = bind_time(conn, day), bind_time(conn, day + timedelta(days=1))
        for table in (usage_hourly, usage_daily):
            await conn.execute(table.delete().where(table.c.period >= start, table.c.period < end))
        rows = [
            r._asdict() for r in await conn.execute(select(exchanges).where(X.started_at >= start, X.started_at < end))
        ]
        for table, increments in rollup.deltas(rows):
            if increments:
                await conn.execute(rollup.upsert(conn.dialect.name, table), increments)
