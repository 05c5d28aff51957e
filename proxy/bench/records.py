"""What the proxy recorded, read back from its database by round label (the ``session_id`` column).

Invariants:
- Reads only: the harness never writes to the database a proxy under test is using.
- A round's records are complete when rows == requests sent, none lacks usage, and the summed tokens
  equal what the upstream says it reported for that label.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.bench.procs import wait_until
from proxy.store import db
from proxy.store.tables import exchanges


class RecordCounter:
    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = db.create_engine(url)

    async def close(self) -> None:
        await self.engine.dispose()

    async def counts(self, labels: list[str]) -> dict[str, dict[str, int]]:
        query = (
            select(
                exchanges.c.session_id,
                func.count(),
                func.coalesce(func.sum(exchanges.c.total_tokens), 0),
                func.coalesce(func.sum(exchanges.c.completion_tokens), 0),
                func.sum(case((exchanges.c.usage_source == "missing", 1), else_=0)),
                func.sum(case((exchanges.c.status == 200, 1), else_=0)),
            )
            .where(exchanges.c.session_id.in_(labels))
            .group_by(exchanges.c.session_id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        out = {
            label: {"rows": 0, "total_tokens": 0, "completion_tokens": 0, "missing_usage": 0, "status_200": 0}
            for label in labels
        }
        for label, n, total, completion, missing, ok in rows:
            out[label] = {
                "rows": int(n),
                "total_tokens": int(total),
                "completion_tokens": int(completion),
                "missing_usage": int(missing or 0),
                "status_200": int(ok or 0),
            }
        return out

    async def wait_for(self, expected: Mapping[str, int], timeout: float) -> bool:
        """Wait until every label has at least its expected number of rows."""
        labels = list(expected)

        async def done() -> bool:
            got = await self.counts(labels)
            return all(got[label]["rows"] >= n for label, n in expected.items())

        return await wait_until(done, timeout)

    async def check(
        self, expected: Mapping[str, int], upstream: Mapping[str, Mapping[str, int]], *, drain_s: float
    ) -> dict[str, Any]:
        started = time.monotonic()
        got = await self.counts(list(expected))
        sent = sum(expected.values())
        rows = sum(g["rows"] for g in got.values())
        tokens_db = sum(g["total_tokens"] for g in got.values())
        tokens_up = sum(upstream.get(label, {}).get("total_tokens", 0) for label in expected)
        missing = sum(g["missing_usage"] for g in got.values())
        return {
            "requests_sent": sent,
            "rows": rows,
            "lost": sent - rows,
            "tokens_upstream": tokens_up,
            "tokens_db": tokens_db,
            "missing_usage": missing,
            "status_200": sum(g["status_200"] for g in got.values()),
            "complete": rows == sent and tokens_db == tokens_up and missing == 0,
            # Time from the last response to the last record in the database.
            "drain_s": round(drain_s, 3),
            "check_s": round(time.monotonic() - started, 3),
        }
