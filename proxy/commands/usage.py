"""``proxy usage``: tokens, cost, errors, latency and TTFT, grouped and filtered; ``--recompute-cost`` re-prices."""

from __future__ import annotations

import argparse
import dataclasses

from proxy.commands import (
    Subparsers,
    add_common,
    add_filters,
    open_engine,
    parsed_filters,
    print_rows,
    run,
    settings_from,
)
from proxy.config import ConfigError
from proxy.store.filters import QueryError
from proxy.store.queries import DIMENSIONS, parse_dimensions

COLUMNS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_usd",
    "unknown_cost",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
)


def cmd_usage(args: argparse.Namespace) -> int:
    from proxy.store import queries
    from proxy.usage.pricing import PriceTable

    settings = settings_from(args)
    try:
        dims = parse_dimensions(args.by)
    except QueryError as exc:
        raise ConfigError(f"--by: {exc}") from None
    filters = parsed_filters(args, "usage")

    async def report() -> list[dict]:
        async with open_engine(settings) as engine:
            if args.recompute_cost:
                from proxy.usage.accounting import recompute_costs

                result = await recompute_costs(engine, PriceTable.from_settings(settings), filters)
                if args.format == "table":
                    print(
                        f"re-priced {result.examined} exchanges: {result.changed} changed, "
                        f"rollups rebuilt for {result.days_rebuilt} days"
                    )
                else:
                    print_rows([dataclasses.asdict(result)], args.format)
                return []
            async with engine.connect() as conn:
                return await queries.usage(conn, dims, filters)

    rows = run(report)
    if not args.recompute_cost:
        print_rows(rows, args.format, [*dims, *COLUMNS] if args.format == "table" else None)
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("usage", help="usage report: tokens, cost, errors, latency, TTFT")
    add_common(p)
    p.add_argument("--by", metavar="DIMS", help=f"group by a comma-separated list of: {','.join(DIMENSIONS)}")
    add_filters(p)
    p.add_argument(
        "--recompute-cost", action="store_true", help="re-price stored exchanges with the current price table"
    )
    p.set_defaults(func=cmd_usage)
