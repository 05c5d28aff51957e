"""Every usage grouping and filter on both databases, against expectations computed from the ``recorded``
fixture set of exchanges (tests/store/conftest.py), written through the write path that keeps the rollups."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proxy.config import Price
from proxy.record.exchange import Exchange, Outcome, UsageSource
from proxy.store import queries, rollup
from proxy.store.filters import Filters
from proxy.store.prune import prune
from proxy.store.writes import insert_exchanges
from proxy.usage.accounting import recompute_costs
from proxy.usage.pricing import PriceTable
from tests.support import Database
from tests.support.reported import FROM_10_15, HOUR, TOKEN_FIELDS, WHOLE_HOUR, hand_made

BASE = datetime(2026, 3, 1, tzinfo=UTC)


def group_value(ex: Exchange, dim: str) -> Any:
    return {
        "model": ex.returned_model or ex.requested_model,
        "day": ex.started_at.strftime("%Y-%m-%d"),
        "hour": ex.started_at.strftime("%Y-%m-%dT%H:00:00Z"),
        "api": ex.api,
        "key": ex.key_fingerprint,
        "session": ex.session_id,
        "upstream": ex.upstream,
        "status": ex.status,
        "user": ex.user,
    }[dim]


def nearest_rank(values: list[float], p: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, -(-p * len(ordered) // 100)) - 1]


def expected(exs: list[Exchange], dims: list[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[Exchange]] = defaultdict(list)
    for ex in exs:
        groups[tuple(group_value(ex, d) for d in dims)].append(ex)
    out = {}
    for key, members in groups.items():
        reported = [e for e in members if e.usage.source is UsageSource.PROVIDER]
        known = [e.cost_usd for e in members if e.cost_usd is not None]

        def told(attr: str, reported: list[Exchange] = reported) -> list[int]:
            return [v for e in reported if (v := getattr(e.usage, attr)) is not None]

        def total(attr: str) -> int | None:
            return sum(told(attr)) if told(attr) else None

        out[key] = {
            **{f"{name}_reported": len(told(name)) for name in queries.TOKENS},
            "cost_usd_reported": len(known),
            "requests": len(members),
            "errors": sum((e.status or 0) >= 400 or e.outcome is not Outcome.COMPLETE for e in members),
            "prompt_tokens": total("prompt_tokens"),
            "completion_tokens": total("completion_tokens"),
            "cached_tokens": total("cached_tokens"),
            "reasoning_tokens": total("reasoning_tokens"),
            "total_tokens": total("total_tokens"),
            "cache_write_tokens": total("cache_write_tokens"),
            "cost_usd": sum(known) if known else None,
            "unknown_cost": sum(e.cost_source == "unknown" for e in members),
            "missing_usage": len(members) - len(reported),
            "latency": [e.duration_ms for e in members if e.duration_ms is not None],
            "ttft": [e.ttft_ms for e in members if e.ttft_ms is not None],
        }
    return out


def check(rows: list[dict[str, Any]], exs: list[Exchange], dims: list[str]) -> None:
    want = expected(exs, dims)
    got = {tuple(r[d] for d in dims): r for r in rows}
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        reported = [f"{name}_reported" for name in queries.TOKENS]
        for name in ("requests", "errors", "unknown_cost", "missing_usage", *queries.TOKENS, *reported):
            assert g[name] == w[name], (key, name)
        assert g["cost_usd"] == (pytest.approx(w["cost_usd"]) if w["cost_usd"] is not None else None), key
        for metric, ps in (("latency", queries.LATENCY_PERCENTILES), ("ttft", queries.TTFT_PERCENTILES)):
            for p in ps:
                exact, estimate = nearest_rank(w[metric], p), g[f"{metric}_p{p}_ms"]
                if exact is None:
                    assert estimate is None
                else:  # the estimate lies in the exact value's histogram bucket (within 19%)
                    assert rollup.bucket_of(estimate) == rollup.bucket_of(exact), (key, metric, p, exact, estimate)
    keys = [tuple(r[d] for d in dims) for r in rows]
    assert keys == sorted(keys, key=lambda k: tuple((v is not None, v) for v in k))


GROUPINGS = [[], *[[d] for d in queries.DIMENSIONS], ["model", "day"], ["status", "upstream"], ["session", "model"],
             ["hour", "key"], ["user", "day"]]  # fmt: skip


async def test_every_grouping(database: Database, recorded: list[Exchange]) -> None:
    shapes = set()
    for dims in GROUPINGS:
        async with database.engine.connect() as conn:
            rows = await queries.usage(conn, dims)
        check(rows, recorded, dims)
        shapes |= {(r["prompt_tokens_reported"] > 0, r["total_tokens_reported"] > r["prompt_tokens_reported"])
                   for r in rows}  # fmt: skip
    # Groups that only an upstream reporting totals fed, and groups where some exchanges reported prompt tokens.
    assert {(False, True), (True, True)} <= shapes


def window(exs: list[Exchange], since: datetime | None, until: datetime | None) -> list[Exchange]:
    return [e for e in exs if (since is None or e.started_at >= since) and (until is None or e.started_at < until)]


WINDOWS = (
    (BASE + timedelta(hours=5, minutes=17), None),  # raw edge + whole hours + whole days
    (None, BASE + timedelta(days=1, hours=3, minutes=40)),
    (BASE + timedelta(hours=20, minutes=1), BASE + timedelta(days=2, hours=2, minutes=59)),
    (BASE + timedelta(hours=7, minutes=10), BASE + timedelta(hours=7, minutes=50)),  # inside one hour
    (BASE + timedelta(days=1), BASE + timedelta(days=2)),  # whole days only
)


async def test_time_windows_mix_rollups_and_raw_rows_exactly(database: Database, recorded: list[Exchange]) -> None:
    for since, until in WINDOWS:
        for dims in ([], ["model", "day"], ["hour"], ["session"]):
            async with database.engine.connect() as conn:
                rows = await queries.usage(conn, dims, Filters(since=since, until=until))
            check(rows, window(recorded, since, until), dims)


FILTERS = (
    (Filters(model="gpt-x"), lambda e: "gpt-x" in (e.requested_model, e.returned_model)),
    (Filters(model="gpt-x-2026-01-01"), lambda e: e.returned_model == "gpt-x-2026-01-01"),
    (Filters(key="fp_one"), lambda e: e.key_fingerprint == "fp_one"),
    (Filters(session="suite-a"), lambda e: e.session_id == "suite-a"),
    (Filters(upstream="openrouter"), lambda e: e.upstream == "openrouter"),
    (Filters(user="alice"), lambda e: e.user == "alice"),
    (Filters(status=429), lambda e: e.status == 429),
    (Filters(errors_only=True), lambda e: (e.status or 0) >= 400 or e.outcome is not Outcome.COMPLETE),
)


async def test_filters(database: Database, recorded: list[Exchange]) -> None:
    for filters, keep in FILTERS:
        async with database.engine.connect() as conn:
            rows = await queries.usage(conn, ["model"], filters)
        check(rows, [e for e in recorded if keep(e)], ["model"])


def test_plan_covers_the_window_exactly() -> None:
    since, until = BASE + timedelta(hours=5, minutes=17), BASE + timedelta(days=3, hours=4, minutes=2)
    segments = queries.plan(since, until, daily=True)
    assert sorted((s[1], s[2]) for s in segments)[0][0] == since
    covered = sorted((s[1], s[2]) for s in segments)
    for (_, a_end), (b_start, _) in itertools.pairwise(covered):
        assert a_end == b_start
    assert covered[-1][1] == until
    assert {s[0] for s in segments} == {"raw", "hour", "day"}


async def _figures(database: Database, dims: list[str], filters: Filters | None = None) -> dict[str, dict[str, Any]]:
    async with database.engine.connect() as conn:
        rows = await queries.usage(conn, dims, filters)
    return {r["model"]: {n: (r[n], r[f"{n}_reported"]) for n in TOKEN_FIELDS} for r in rows}


async def test_each_column_sums_only_the_exchanges_that_reported_it(database: Database) -> None:
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, hand_made())
    assert await _figures(database, ["model"]) == WHOLE_HOUR  # rollups
    assert await _figures(database, ["session", "model"]) == WHOLE_HOUR  # exchanges
    assert await _figures(database, ["model"], Filters(since=HOUR + timedelta(minutes=15))) == FROM_10_15  # both

    # Rebuilding the day's rollups (re-pricing) and pruning every exchange keep the same figures.
    prices = PriceTable({"m": Price(input=2.0, cached_input=0.5, output=8.0)}, bundled=False)
    result = await recompute_costs(database.engine, prices, Filters())
    assert (result.changed, result.days_rebuilt) == (1, 1)
    # 8 uncached prompt tokens at $2/M, 2 cached at $0.5/M, 5 completion tokens at $8/M.
    repriced = {**WHOLE_HOUR, "m": {**WHOLE_HOUR["m"], "cost_usd": (0.000057, 1)}}
    assert await _figures(database, ["model"]) == repriced
    await prune(database.engine, HOUR + timedelta(days=1))
    assert await database.rows() == []
    assert await _figures(database, ["model", "day"]) == repriced
