"""Subcommands of ``proxy``. Each module has ``register(subparsers)`` and thin command functions over
library code; ``proxy.cli.COMMAND_MODULES`` lists them. Shared argument handling lives here."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.config import ConfigError, Settings, load_settings

T = TypeVar("T")
Subparsers = Any  # argparse's _SubParsersAction is private


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file (else $PROXY_CONFIG, ./proxy.toml)")
    parser.add_argument("--db", metavar="URL", help="database URL (sqlite+aiosqlite:///FILE, postgresql+asyncpg://)")


def flags_tree(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line values in the settings tree shape; only flags the user actually gave."""
    tree: dict[str, Any] = {}
    if getattr(args, "listen", None):
        tree["listen"] = args.listen
    if getattr(args, "upstream", None):
        tree["upstream"] = {"url": args.upstream}
    if getattr(args, "db", None):
        tree["database"] = {"url": args.db}
    if getattr(args, "mode", None):
        tree["mode"] = args.mode
    if getattr(args, "workers", None):
        tree["workers"] = args.workers
    return tree


def settings_from(args: argparse.Namespace, *, require_upstream: bool = False) -> Settings:
    return load_settings(getattr(args, "config", None), flags_tree(args), require_upstream=require_upstream)


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine that has answered once; an unreachable database is a ConfigError (exit code 2)."""
    from proxy.store import db

    engine = db.create_engine(settings.database.url)
    try:
        try:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - every driver has its own error types
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise ConfigError(
                f"database.url: cannot connect to {db.redacted_url(settings.database.url)}: {detail}"
            ) from None
        yield engine
    finally:
        await engine.dispose()


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())
