"""The usage rollups the writer maintains, and the accumulator shared by every usage report.

Invariants:
- ``usage_hourly`` and ``usage_daily`` hold, per UTC hour or day x (API family, reported model, requested
  model, upstream, key fingerprint, status), the counts and sums of the exchanges inserted for it, plus latency
  and TTFT histograms. Both are updated in the transaction that inserts the exchanges, only for rows that
  insert actually added
  (``ON CONFLICT DO NOTHING ... RETURNING id``), so a spool replay never counts twice. Updates are atomic
  increments (``ON CONFLICT DO UPDATE SET n = n + excluded.n``) in key order, safe with several writers.
- NULL key values are stored as ``''`` / status 0 (a primary key cannot hold NULL) and read back as NULL.
- Histograms: bucket 0 holds values under 1 ms, bucket i (1..BUCKETS-2) holds [2^((i-1)/4), 2^(i/4)) ms,
  the last bucket everything from 2^21 ms (35 min) on; Python (``bucket_of``) and SQL (``bucket_case``)
  compare against the same edges. A percentile estimate therefore lies in the same
  bucket as the true nearest-rank value: within a factor 2^(1/4) (19%) of it.
- ``Acc`` folds exchanges (raw rows) and rollup rows alike, so every report has the same semantics
  whichever it reads: each token column summed over the exchanges that reported it, with a count of them
  (``REPORTED``; the sum is NULL when none did, so an upstream that reports only ``total_tokens`` shows no
  made-up prompt or completion 0), cost summed over known costs with their count (``cost_known``; NULL
  when none is known), percentiles estimated from the histograms.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Table, case, literal
from sqlalchemy.dialects import postgresql, sqlite

from proxy.store.tables import HISTOGRAM_BUCKETS as BUCKETS
from proxy.store.tables import ROLLUP_SUMS as SUMS
from proxy.store.tables import usage_daily, usage_hourly

STEPS_PER_DOUBLING = 4
KEY = ("period", "api", "model", "model_requested", "upstream", "key_fingerprint", "status")
LATENCY = tuple(f"lat_{i:02d}" for i in range(BUCKETS))
TTFT = tuple(f"ttft_{i:02d}" for i in range(BUCKETS))
# Token columns summed over the exchanges that reported usage.
TOKENS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cache_write_tokens",
)
# How many exchanges reported each token column: the sum is shown only when at least one did.
REPORTED = {name: f"{name}_reported" for name in TOKENS}
# Every column a rollup row adds up, in one order for building and reading rows.
ADDITIVE = (*SUMS, "cost_usd", *LATENCY, *TTFT)


def bucket_bounds(i: int) -> tuple[float, float]:
    if i == 0:
        return 0.0, 1.0
    return 2 ** ((i - 1) / STEPS_PER_DOUBLING), 2 ** (i / STEPS_PER_DOUBLING)


# EDGES[i] is the lower bound of bucket i + 1; Python and SQL both bucket by comparing against these.
EDGES = tuple(bucket_bounds(i)[0] for i in range(1, BUCKETS))


def bucket_of(ms: float) -> int:
    return bisect_right(EDGES, ms)


def bucket_case(column: Any, low: int = 0, high: int = BUCKETS - 1) -> ColumnElement[Any]:
    """SQL for ``bucket_of(column)``: a balanced tree of comparisons (7 per row), portable everywhere."""
    if low == high:
        return literal(low)
    mid = (low + high + 1) // 2
    return case((column < EDGES[mid - 1], bucket_case(column, low, mid - 1)), else_=bucket_case(column, mid, high))


def estimate(hist: list[int], p: int) -> float | None:
    """Nearest-rank percentile p (0-100) from a histogram, interpolated geometrically inside its bucket."""
    n = sum(hist)
    if n == 0:
        return None
    rank = max(1, (p * n + 99) // 100)
    seen = 0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            low, high = bucket_bounds(i)
            if i == BUCKETS - 1:
                return low
            frac = (rank - seen - 0.5) / count
            return low + (high - low) * frac if i == 0 else low * (high / low) ** frac
        seen += count
    return None  # unreachable: ranks never exceed n


def period_of(value: datetime, unit: str) -> datetime:
    """The start of the UTC hour or day holding ``value``."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    value = value.replace(minute=0, second=0, microsecond=0)
    return value.replace(hour=0) if unit == "day" else value


def is_error(status: int | None, outcome: str) -> bool:
    return (status is not None and status >= 400) or outcome != "complete"


@dataclass
class Acc:
    """Counts, sums and histograms for one group."""

    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SUMS, 0))
    cost: float = 0.0
    latency: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    ttft: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add_exchange(self, row: Mapping[str, Any]) -> None:
        s = self.sums
        s["requests"] += 1
        s["errors"] += is_error(row["status"], row["outcome"])
        if row["usage_source"] == "missing":
            s["missing_usage"] += 1
        else:
            s["usage_reported"] += 1
            for name in TOKENS:
                if row[name] is not None:
                    s[name] += row[name]
                    s[REPORTED[name]] += 1
        if row["cost_usd"] is not None:
            s["cost_known"] += 1
            self.cost += row["cost_usd"]
        if row["cost_source"] == "unknown":
            s["unknown_cost"] += 1
        if row["duration_ms"] is not None:
            self.latency[bucket_of(row["duration_ms"])] += 1
        if row["ttft_ms"] is not None:
            self.ttft[bucket_of(row["ttft_ms"])] += 1

    def add_sums(self, values: Iterable[Any]) -> None:
        """Add ``SUMS`` then cost, in that order (an aggregate over exchanges)."""
        vals = [v or 0 for v in values]
        for name, v in zip(SUMS, vals, strict=False):
            self.sums[name] += int(v)
        self.cost += float(vals[len(SUMS)])

    def add_rollup(self, values: Iterable[Any]) -> None:
        """Add a row of ``ADDITIVE`` values (a rollup row or a SUM over rollup rows)."""
        vals = [v or 0 for v in values]
        n = len(SUMS) + 1
        self.add_sums(vals[:n])
        for i, v in enumerate(vals[n : n + BUCKETS]):
            self.latency[i] += int(v)
        for i, v in enumerate(vals[n + BUCKETS :]):
            self.ttft[i] += int(v)

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.sums)
        out["cost_usd"] = self.cost
        out.update(zip(LATENCY, self.latency, strict=True))
        out.update(zip(TTFT, self.ttft, strict=True))
        return out


def rollup_key(row: Mapping[str, Any], unit: str = "hour") -> tuple[Any, ...]:
    return (
        period_of(row["started_at"], unit),
        row["api"] or "",
        row["model"] or "",
        row["model_requested"] or "",
        row["upstream"] or "",
        row["key_fingerprint"] or "",
        row["status"] or 0,
    )


TABLES: tuple[tuple[str, Table], ...] = (("hour", usage_hourly), ("day", usage_daily))


def deltas(rows: Iterable[Mapping[str, Any]]) -> list[tuple[Table, list[dict[str, Any]]]]:
    """Increments for each rollup table from exchange rows (``exchanges`` column names), in key order."""
    rows = list(rows)
    out = []
    for unit, table in TABLES:
        groups: dict[tuple[Any, ...], Acc] = {}
        for row in rows:
            key = rollup_key(row, unit)
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = Acc()
            acc.add_exchange(row)
        out.append((table, [{**dict(zip(KEY, key, strict=True)), **groups[key].values()} for key in sorted(groups)]))
    return out


@cache
def upsert(dialect_name: str, table: Table) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` adding every additive column.

    Built once per dialect and table: constructing its ~190 column expressions cost more CPU than the
    rest of a one-row batch.
    """
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(KEY),
        set_={name: table.c[name] + stmt.excluded[name] for name in ADDITIVE},
    )
