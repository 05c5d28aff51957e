"""``proxy sessions``: recorded sessions, most recently active first."""

from __future__ import annotations

import argparse

from proxy.commands import Subparsers, add_common, add_filters, print_rows, query_filtered

COLUMNS = ("session", "first_at", "last_at", "requests", "errors", "total_tokens", "cost_usd", "unknown_cost", "models")


def cmd_sessions(args: argparse.Namespace) -> int:
    from proxy.store import browse

    rows = query_filtered(args, "sessions", lambda conn, filters: browse.sessions(conn, filters, limit=args.limit))
    print_rows(rows, args.format, COLUMNS if args.format == "table" else None)
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("sessions", help="recorded sessions with their totals")
    add_common(p)
    add_filters(p)
    p.add_argument("--limit", type=int, default=100, help="most sessions to show (default 100)")
    p.set_defaults(func=cmd_sessions)
