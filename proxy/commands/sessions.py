"""``proxy sessions``: recorded sessions, most recently active first."""

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

COLUMNS = ("session", "first_at", "last_at", "requests", "errors", "total_tokens", "cost_usd", "unknown_cost", "models")


def cmd_sessions(args: argparse.Namespace) -> int:
    from proxy.store import queries
    from proxy.store.queries import QueryError
    from proxy.views import filters_from

    settings = settings_from(args)
    try:
        filters = filters_from(filter_params(args))
    except QueryError as exc:
        raise SystemExit(f"proxy sessions: error: {exc}") from None

    async def fetch() -> list[dict]:
        async with open_engine(settings) as engine, engine.connect() as conn:
            return await queries.sessions(conn, filters, limit=args.limit)

    print_rows(run(fetch), args.format, COLUMNS if args.format == "table" else None)
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("sessions", help="recorded sessions with their totals")
    add_common(p)
    add_filters(p)
    p.add_argument("--limit", type=int, default=100, help="most sessions to show (default 100)")
    p.set_defaults(func=cmd_sessions)
