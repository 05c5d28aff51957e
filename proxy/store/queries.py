"""Usage reports: the one query layer behind ``proxy usage``, the admin API's usage and the dashboard's
charts (listings of exchanges and sessions are in ``store.browse``, shared filters in ``store.filters``).

Invariants:
- Portable SQL (SQLite and PostgreSQL); the only dialect-specific pieces are the hour/day bucket
  expressions in ``_bucket``.
- Usage reports read the ``usage_hourly`` rollup for whole hours and the narrow ``exchanges`` table for
  the rest (see ``usage``); bodies are read for one exchange (or one session) at a time.
- Each token sum covers the exchanges that reported that column and is NULL when none did (never a
  made-up 0); ``<column>_reported`` says how many did. Cost sums the known costs (NULL when none is
  known; ``cost_usd_reported`` counts them); ``unknown_cost`` counts exchanges whose cost is unknown,
  ``missing_usage`` those without usage.
- Percentiles are nearest-rank, estimated from log histograms (``store/rollup.py``): within 19% of the
  exact value, the same whichever table a report reads.
- Times in and out are aware UTC datetimes (SQLite stores naive UTC text, so binds drop the offset there).
- Results are plain dicts with snake_case keys (JSON-ready through ``jsonable``), the same for every caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.record.exchange import CostSource
from proxy.store import rollup
from proxy.store.filters import IS_ERROR, Filters, QueryError, count_if, shared_clauses, where_clauses
from proxy.store.rollup import Acc
from proxy.store.tables import exchanges, usage_daily, usage_hourly

X = exchanges.c
DIMENSIONS = ("model", "day", "hour", "api", "key", "session", "upstream", "status", "user")
LATENCY_PERCENTILES = (50, 95, 99)
TTFT_PERCENTILES = (50, 95)


COUNTS = ("requests", "errors", "unknown_cost", "missing_usage")
TOKENS = rollup.TOKENS


def parse_dimensions(spec: str | Sequence[str] | None) -> list[str]:
    """``"model,day"`` -> ``["model", "day"]``; unknown or repeated names raise QueryError."""
    if not spec:
        return []
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    for name in names:
        if name not in DIMENSIONS:
            raise QueryError(f"unknown grouping {name!r}; use any of {', '.join(DIMENSIONS)}")
    if len(set(names)) != len(names):
        raise QueryError("each grouping may appear once")
    return names


def _bucket(conn: AsyncConnection, unit: str, column: Any = X.started_at) -> ColumnElement[Any]:
    if conn.dialect.name == "sqlite":
        # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' UTC text: the bucket is a prefix.
        return func.substr(column, 1, 10 if unit == "day" else 13)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD" if unit == "day" else "YYYY-MM-DD HH24")


def _dimension(conn: AsyncConnection, name: str) -> ColumnElement[Any]:
    if name in ("day", "hour"):
        return _bucket(conn, name)
    column = {
        "model": func.coalesce(X.model, X.model_requested),
        "api": X.api,
        "key": X.key_fingerprint,
        "session": X.session_id,
        "upstream": X.upstream,
        "status": X.status,
        "user": X.end_user,
    }[name]
    return column


ROLLUP_DIMENSIONS = frozenset({"model", "day", "hour", "api", "key", "upstream", "status"})
Groups = dict[tuple[Any, ...], Acc]


def rollup_dimension(conn: AsyncConnection, table: Table, name: str) -> ColumnElement[Any]:
    c = table.c
    if name in ("day", "hour"):
        return _bucket(conn, name, c.period)
    return {
        "model": case((c.model != "", c.model), else_=func.nullif(c.model_requested, "")),
        "api": c.api,
        "key": func.nullif(c.key_fingerprint, ""),
        "upstream": c.upstream,
        "status": func.nullif(c.status, 0),
    }[name]


def _uses_rollup(dims: Sequence[str], f: Filters) -> bool:
    return set(dims) <= ROLLUP_DIMENSIONS and not (f.session or f.user or f.errors_only)


def _ceil(value: datetime, unit: str) -> datetime:
    floor = rollup.period_of(value, unit)
    step = timedelta(days=1) if unit == "day" else timedelta(hours=1)
    return floor if floor == value.astimezone(UTC) else floor + step


Segment = tuple[str, datetime | None, datetime | None]  # (source, since, until); None = unbounded


def plan(since: datetime | None, until: datetime | None, *, daily: bool) -> list[Segment]:
    """Cover [since, until) with whole days (when ``daily``), whole hours, and raw rows at the edges."""
    hour_lo = _ceil(since, "hour") if since is not None else None
    hour_hi = rollup.period_of(until, "hour") if until is not None else None
    if hour_lo is not None and hour_hi is not None and hour_hi <= hour_lo:
        return [("raw", since, until)]
    segments: list[Segment] = []
    if since is not None and hour_lo is not None and hour_lo > since:
        segments.append(("raw", since, hour_lo))
    if until is not None and hour_hi is not None and hour_hi < until:
        segments.append(("raw", hour_hi, until))
    day_lo = _ceil(hour_lo, "day") if hour_lo is not None else None
    day_hi = rollup.period_of(hour_hi, "day") if hour_hi is not None else None
    if not daily or (day_lo is not None and day_hi is not None and day_hi <= day_lo):
        return [*segments, ("hour", hour_lo, hour_hi)]
    if hour_lo is not None and day_lo is not None and day_lo > hour_lo:
        segments.append(("hour", hour_lo, day_lo))
    if hour_hi is not None and day_hi is not None and day_hi < hour_hi:
        segments.append(("hour", day_hi, hour_hi))
    return [*segments, ("day", day_lo, day_hi)]


def _acc(groups: Groups, key: tuple[Any, ...]) -> Acc:
    acc = groups.get(key)
    if acc is None:
        acc = groups[key] = Acc()
    return acc


async def _fold_raw(conn: AsyncConnection, dims: list[str], f: Filters, groups: Groups) -> None:
    """Aggregate exchanges in SQL: sums in one pass, then one pass per histogram."""
    where = where_clauses(conn, f)
    exprs = [_dimension(conn, d) for d in dims]
    reported = X.usage_source != "missing"
    by_name = {
        "requests": func.count(),
        "errors": count_if(IS_ERROR),
        "usage_reported": count_if(reported),
        **{name: func.sum(case((reported, X[name]))) for name in TOKENS},
        **{rollup.REPORTED[name]: func.count(case((reported, X[name]))) for name in TOKENS},
        "cost_known": func.count(X.cost_usd),
        "unknown_cost": count_if(X.cost_source == str(CostSource.UNKNOWN)),
        "missing_usage": count_if(X.usage_source == "missing"),
    }
    sums = [*(by_name[name] for name in rollup.SUMS), func.sum(X.cost_usd)]  # the order Acc.add_sums reads
    stmt = select(*exprs, *sums).where(*where)
    if exprs:
        stmt = stmt.group_by(*exprs)
    n = len(dims)
    for row in await conn.execute(stmt):
        if row[n]:
            _acc(groups, tuple(row[:n])).add_sums(row[n:])
    for column, attr in ((X.duration_ms, "latency"), (X.ttft_ms, "ttft")):
        # Bucket in a subquery and group by its labels: the bound edges then appear once in the SQL.
        inner = select(*[e.label(f"d{i}") for i, e in enumerate(exprs)], rollup.bucket_case(column).label("b"))
        inner_q = inner.where(*where, column.is_not(None)).subquery()
        keys = [inner_q.c[f"d{i}"] for i in range(n)]
        hist = select(*keys, inner_q.c.b, func.count()).group_by(*keys, inner_q.c.b)
        for row in await conn.execute(hist):
            getattr(_acc(groups, tuple(row[:n])), attr)[row[n]] += row[n + 1]


async def _fold_rollup(
    conn: AsyncConnection,
    table: Table,
    dims: list[str],
    f: Filters,
    since: datetime | None,
    until: datetime | None,
    groups: Groups,
) -> None:
    c = table.c
    where = shared_clauses(conn, c, c.period, f, since, until)
    exprs = [rollup_dimension(conn, table, d) for d in dims]
    stmt = select(*exprs, *[func.sum(c[name]) for name in rollup.ADDITIVE]).where(*where)
    if exprs:
        stmt = stmt.group_by(*exprs)
    n = len(dims)
    for row in await conn.execute(stmt):
        if row[n] is not None:  # an ungrouped SUM over no rows is NULL
            _acc(groups, tuple(row[:n])).add_rollup(row[n:])


async def usage(
    conn: AsyncConnection, dims: Sequence[str] = (), filters: Filters | None = None
) -> list[dict[str, Any]]:
    """One row per group: requests, errors, token sums, cost, unknown-cost count, latency and TTFT percentiles.

    Whole days and hours come from the rollups when the grouping and filters allow it (not by session or
    user), the partial hours at the edges of ``since``/``until`` and everything else from the exchanges
    themselves. All feed the same accumulator, so the answer does not depend on the path taken.
    """
    dims = list(dims)
    f = filters or Filters()
    groups: Groups = {}
    if not _uses_rollup(dims, f):
        await _fold_raw(conn, dims, f, groups)
    else:
        for source, since, until in plan(f.since, f.until, daily="hour" not in dims):
            if source == "raw":
                await _fold_raw(conn, dims, replace(f, since=since, until=until), groups)
            else:
                table = usage_daily if source == "day" else usage_hourly
                await _fold_rollup(conn, table, dims, f, since, until, groups)
    out = [_report_row(dims, key, acc) for key, acc in groups.items() if acc.sums["requests"]]
    out.sort(key=lambda row: _sort_key(tuple(row[d] for d in dims)))
    return out


def _report_row(dims: list[str], key: tuple[Any, ...], acc: Acc) -> dict[str, Any]:
    data: dict[str, Any] = dict(zip(dims, key, strict=True))
    if data.get("hour") is not None:
        data["hour"] = data["hour"].replace(" ", "T") + ":00:00Z"
    s = acc.sums
    data["requests"] = s["requests"]
    data["errors"] = s["errors"]
    for name in TOKENS:
        data[name] = s[name] if s[rollup.REPORTED[name]] else None
    data["cost_usd"] = round(acc.cost, 9) if s["cost_known"] else None
    for name in TOKENS:
        data[rollup.REPORTED[name]] = s[rollup.REPORTED[name]]
    data["cost_usd_reported"] = s["cost_known"]
    data["unknown_cost"] = s["unknown_cost"]
    data["missing_usage"] = s["missing_usage"]
    for p in LATENCY_PERCENTILES:
        data[f"latency_p{p}_ms"] = _ms(rollup.estimate(acc.latency, p))
    for p in TTFT_PERCENTILES:
        data[f"ttft_p{p}_ms"] = _ms(rollup.estimate(acc.ttft, p))
    return data


def _sort_key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is not None, v) for v in values)


def _ms(value: float | None) -> float | None:
    return round(float(value), 3) if value is not None else None
