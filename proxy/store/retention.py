"""Automatic retention while the proxy runs: ``proxy prune`` on a timer, off the request path."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.config import Retention
from proxy.durations import parse_duration
from proxy.store.prune import prune

log = logging.getLogger("proxy.store.retention")


def enabled(rules: Retention) -> bool:
    return bool(rules.max_age or rules.bodies_max_age)


async def apply_once(engine: AsyncEngine, rules: Retention) -> None:
    now = datetime.now(UTC)
    if rules.bodies_max_age:
        done = await prune(engine, now - parse_duration(rules.bodies_max_age), bodies_only=True)
        if done.bodies:
            log.info("retention: deleted %d bodies older than %s", done.bodies, rules.bodies_max_age)
    if rules.max_age:
        done = await prune(engine, now - parse_duration(rules.max_age))
        if done.exchanges:
            log.info("retention: deleted %d exchanges older than %s", done.exchanges, rules.max_age)


async def run_forever(engine: AsyncEngine, rules: Retention) -> None:
    interval = parse_duration(rules.interval).total_seconds()
    while True:
        try:
            await apply_once(engine, rules)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(interval)
