"""``proxy show ID`` / ``proxy show --session S``: the full record of exchanges, as JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxy.commands import Subparsers, add_common, open_engine, run, settings_from
from proxy.config import ConfigError


def cmd_show(args: argparse.Namespace) -> int:
    from proxy.admin.views import encode, exchange_detail
    from proxy.store import browse

    if bool(args.exchange_id) == bool(args.session):
        raise ConfigError("give an exchange id or --session, not both")
    settings = settings_from(args)

    async def fetch() -> list[dict[str, Any]]:
        async with open_engine(settings) as engine, engine.connect() as conn:
            ids = [args.exchange_id] if args.exchange_id else await browse.session_exchange_ids(conn, args.session)
            rows = [await browse.get_exchange(conn, i) for i in ids]
        return [exchange_detail(r, raw=args.raw) for r in rows if r is not None]

    docs = run(fetch)
    if not docs:
        what = f"exchange {args.exchange_id}" if args.exchange_id else f"session {args.session}"
        print(f"proxy show: no recorded {what}", file=sys.stderr)
        return 1
    out = docs[0] if args.exchange_id else docs
    import msgspec

    sys.stdout.write(msgspec.json.format(encode(out), indent=2).decode() + "\n")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("show", help="one recorded exchange (or a whole session) in full, as JSON")
    add_common(p)
    p.add_argument("exchange_id", nargs="?", help="the exchange id (X-Proxy-Exchange-Id)")
    p.add_argument("--session", metavar="S", help="every exchange of a session, oldest first")
    p.add_argument("--raw", action="store_true", help="include the raw response bytes and stream read timings")
    p.set_defaults(func=cmd_show)
