"""``proxy logs``: the most recent exchanges, one line each (the first thing to type after recording)."""

from __future__ import annotations

import argparse

from proxy.commands import (
    Subparsers,
    add_common,
    add_filters,
    filter_params,
    open_engine,
    print_rows,
    run,
    settings_from,
)

COLUMNS = (
    "started_at",
    "id",
    "session_id",
    "model",
    "status",
    "outcome",
    "stream",
    "total_tokens",
    "cost_usd",
    "duration_ms",
    "ttft_ms",
)


def cmd_logs(args: argparse.Namespace) -> int:
    from proxy.store import queries
    from proxy.store.queries import QueryError
    from proxy.views import filters_from

    settings = settings_from(args)
    try:
        filters = filters_from(filter_params(args))
    except QueryError as exc:
        raise SystemExit(f"proxy logs: error: {exc}") from None

    async def fetch() -> list[dict]:
        async with open_engine(settings) as engine, engine.connect() as conn:
            page = await queries.list_exchanges(conn, filters, limit=args.count)
        rows = page.rows[::-1]  # oldest of the page first, like a log
        for row in rows:
            row["model"] = row["model"] or row["model_requested"]
        return rows

    print_rows(run(fetch), args.format, COLUMNS if args.format == "table" else None)
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("logs", help="the most recent exchanges, one line each")
    add_common(p)
    add_filters(p, errors=True)
    p.add_argument("-n", "--count", type=int, default=20, help="how many (default 20, at most 500)")
    p.set_defaults(func=cmd_logs)
