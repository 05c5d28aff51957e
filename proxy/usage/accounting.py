"""Re-pricing stored exchanges after a price change (``proxy usage --recompute-cost``).

Invariants:
- Provider-reported costs are never touched; every other exchange in range is priced again with the
  current table, exactly as the writer would price it now (same ``PriceTable.cost`` on the same Usage).
- The rollups of every UTC day whose costs changed are rebuilt in the same transaction
  (``store.costs``: the SQL lives there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.store import costs, rollup
from proxy.store.filters import Filters
from proxy.store.stored import Stored
from proxy.usage.pricing import PriceTable, billable

CHUNK = 5000


@dataclass
class RecomputeResult:
    examined: int = 0
    changed: int = 0
    days_rebuilt: int = 0


def _reprice(table: PriceTable, stored: Stored) -> dict[str, Any] | None:
    """The new cost columns for an exchange, or None when they do not change."""
    ok = stored.upstream_status is not None and 200 <= stored.upstream_status < 300
    names = (stored.model, stored.model_requested)
    cost = table.cost(names, stored.started_at, stored.usage, upstream_ok=ok, billed=billable(stored.method))
    new = (cost.usd, str(cost.source), cost.ref)
    if new == (stored.cost_usd, stored.cost_source, stored.price_ref):
        return None
    return {"row_id": stored.id, "cost_usd": new[0], "cost_source": new[1], "price_ref": new[2]}


async def recompute_costs(engine: AsyncEngine, table: PriceTable, filters: Filters) -> RecomputeResult:
    result = RecomputeResult()
    days: set[datetime] = set()
    async with engine.begin() as conn:
        last = ""
        while batch := await costs.priced_by_table(conn, filters, last, CHUNK):
            last = batch[-1].id
            result.examined += len(batch)
            changes = []
            for stored in batch:
                change = _reprice(table, stored)
                if change is not None:
                    changes.append(change)
                    days.add(rollup.period_of(stored.started_at, "day"))
            await costs.set_costs(conn, changes)
            result.changed += len(changes)
        await costs.rebuild_rollups(conn, days)
    result.days_rebuilt = len(days)
    return result
