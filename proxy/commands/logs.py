"""``proxy logs``: the most recent exchanges, one line each (the first thing to type after recording)."""

from __future__ import annotations

import argparse

from proxy.commands import Subparsers, add_common, add_filters, print_rows, query_filtered

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
    from proxy.store import browse

    page = query_filtered(args, "logs", lambda conn, filters: browse.list_exchanges(conn, filters, limit=args.count))
    rows = page.rows[::-1]  # oldest of the page first, like a log
    for row in rows:
        row["model"] = row["model"] or row["model_requested"]
    print_rows(rows, args.format, COLUMNS if args.format == "table" else None)
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("logs", help="the most recent exchanges, one line each")
    add_common(p)
    add_filters(p, errors=True)
    p.add_argument("-n", "--count", type=int, default=20, help="how many (default 20, at most 500)")
    p.set_defaults(func=cmd_logs)
