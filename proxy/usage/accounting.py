"""Re-pricing stored exchanges after a price change (``proxy usage --recompute-cost``).

Invariants:
- Provider-reported costs are never touched; every other exchange in range is priced again with the
  current table, exactly as the writer would price it now.
- The rollups of every UTC day whose costs changed are rebuilt from ``exchanges`` in the same
  transaction. On PostgreSQL the rollup tables are locked first, so a live writer waits instead of
  adding to rows being rebuilt; on SQLite the transaction's write lock does the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy.record.exchange import CostSource, Usage
from proxy.store import rollup
from proxy.store.queries import Filters, bind_time, where_clauses
from proxy.store.tables import exchanges, usage_daily, usage_hourly
from proxy.usage.pricing import PriceTable

X = exchanges.c
CHUNK = 5000
PRICE_COLUMNS = (
    X.id,
    X.started_at,
    X.model,
    X.model_requested,
    X.upstream_status,
    X.prompt_tokens,
    X.completion_tokens,
    X.cached_tokens,
    X.reasoning_tokens,
    X.cost_usd,
    X.cost_source,
    X.price_ref,
)


@dataclass
class RecomputeResult:
    examined: int = 0
    changed: int = 0
    days_rebuilt: int = 0


def _reprice(table: PriceTable, row: Any) -> dict[str, Any] | None:
    """The new cost columns for a row, or None when they do not change."""
    ok = row.upstream_status is not None and 200 <= row.upstream_status < 300
    usage = Usage(
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_tokens=row.cached_tokens,
        reasoning_tokens=row.reasoning_tokens,
    )
    cost = table.cost((row.model, row.model_requested), row.started_at, usage, upstream_ok=ok)
    new = (cost.usd, str(cost.source), cost.ref)
    if new == (row.cost_usd, row.cost_source, row.price_ref):
        return None
    return {"row_id": row.id, "cost_usd": new[0], "cost_source": new[1], "price_ref": new[2]}


async def rebuild_rollups(conn: AsyncConnection, days: set[datetime]) -> None:
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


async def recompute_costs(engine: AsyncEngine, table: PriceTable, filters: Filters) -> RecomputeResult:
    result = RecomputeResult()
    days: set[datetime] = set()
    stmt = update(exchanges).where(X.id == bindparam("row_id"))
    async with engine.begin() as conn:
        where = [*where_clauses(conn, filters), or_(X.cost_source.is_(None), X.cost_source != str(CostSource.PROVIDER))]
        last = ""
        while True:
            query = select(*PRICE_COLUMNS).where(*where, X.id > last).order_by(X.id).limit(CHUNK)
            rows = (await conn.execute(query)).all()
            if not rows:
                break
            last = rows[-1].id
            result.examined += len(rows)
            changes = []
            for row in rows:
                change = _reprice(table, row)
                if change is not None:
                    changes.append(change)
                    days.add(rollup.period_of(row.started_at, "day"))
            if changes:
                await conn.execute(stmt.values(cost_usd=bindparam("cost_usd"), cost_source=bindparam("cost_source"),
                                               price_ref=bindparam("price_ref")), changes)  # fmt: skip
                result.changed += len(changes)
        await rebuild_rollups(conn, days)
    result.days_rebuilt = len(days)
    return result
