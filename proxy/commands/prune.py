"""``proxy prune --older-than 30d [--bodies-only]``: retention, in batches that keep locks short."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from proxy.commands import Subparsers, add_common, open_engine, run, settings_from
from proxy.config import ConfigError
from proxy.durations import parse_duration
from proxy.store.prune import count_older, prune


async def _prune(args: argparse.Namespace) -> str:
    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        raise ConfigError(f"--older-than: {exc}") from None
    cutoff = datetime.now(UTC) - age
    what = "bodies of exchanges" if args.bodies_only else "exchanges"
    async with open_engine(settings_from(args)) as engine:
        if args.dry_run:
            n = await count_older(engine, cutoff, bodies_only=args.bodies_only)
            return f"would delete {n} {what} started before {cutoff.isoformat(timespec='seconds')}"
        result = await prune(engine, cutoff, bodies_only=args.bodies_only, batch_size=args.batch_size)
    return (
        f"deleted {result.exchanges} exchanges and {result.bodies} bodies started before "
        f"{cutoff.isoformat(timespec='seconds')} in {result.batches} batches"
    )


def cmd_prune(args: argparse.Namespace) -> int:
    print(run(lambda: _prune(args)))
    return 0


def register(sub: Subparsers) -> None:
    parser = sub.add_parser("prune", help="delete old exchanges or their bodies (retention)")
    add_common(parser)
    parser.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 2w")
    parser.add_argument("--bodies-only", action="store_true", help="keep usage rows, delete bodies")
    parser.add_argument("--batch-size", type=int, default=2000, help="rows per transaction (default 2000)")
    parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    parser.set_defaults(func=cmd_prune)
