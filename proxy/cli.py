"""The ``proxy`` command. Each subcommand is a thin layer over library functions.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or unreachable database (one line on
stderr naming the key or value).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from proxy.config import ConfigError, Mode, Settings, load_settings

EXIT_CONFIG = 2
Command = Callable[[argparse.Namespace], int]


def _flags(args: argparse.Namespace) -> dict[str, Any]:
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
    return tree


def _settings(args: argparse.Namespace, *, require_upstream: bool = False) -> Settings:
    return load_settings(args.config, _flags(args), require_upstream=require_upstream)


async def _prepare_database(settings: Settings, *, migrate: bool) -> None:
    from proxy.store import db
    from proxy.store import migrate as migrations

    engine = db.create_engine(settings.database.url)
    try:
        try:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - every driver has its own error types
            raise ConfigError(
                f"database.url: cannot connect to {db.redacted_url(settings.database.url)}: "
                f"{type(exc).__name__}: {exc}".splitlines()[0]
            ) from None
        await db.enable_wal(engine)
        if migrate:
            await migrations.upgrade(engine)
    finally:
        await engine.dispose()


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from proxy.server import create_app

    settings = _settings(args, require_upstream=True)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_prepare_database(settings, migrate=settings.database.auto_migrate))
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    host, port = settings.host_port
    logging.getLogger("proxy").info(
        "proxy listening on http://%s:%d -> %s (mode %s)", host, port, settings.upstream.url, settings.mode
    )
    web.run_app(
        create_app(settings),
        host=host,
        port=port,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        handler_cancellation=True,
        shutdown_timeout=30,
        print=None,
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    asyncio.run(_prepare_database(settings, migrate=True))
    print(f"database at {asyncio.run(_current(settings))}")
    return 0


async def _current(settings: Settings) -> str:
    from proxy.store import db, migrate

    engine = db.create_engine(settings.database.url)
    try:
        rev = await migrate.current_revision(engine)
    finally:
        await engine.dispose()
    head = migrate.head_revision()
    state = "up to date" if rev == head else f"behind head {head}"
    return f"{rev or '(empty)'} ({state})"


def cmd_db_current(args: argparse.Namespace) -> int:
    settings = _settings(args)
    asyncio.run(_prepare_database(settings, migrate=False))
    print(asyncio.run(_current(settings)))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file (else $PROXY_CONFIG, ./proxy.toml)")
    parser.add_argument("--db", metavar="URL", help="database URL (sqlite+aiosqlite:///FILE, postgresql+asyncpg://)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxy", description="Recording reverse proxy for OpenAI-compatible APIs")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    _common(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="listen address (default 127.0.0.1:8080)")
    serve.add_argument("--upstream", metavar="URL", help="upstream base URL, e.g. https://api.openai.com/v1")
    serve.add_argument("--mode", choices=[m.value for m in Mode], help="what to do with requests")
    serve.set_defaults(func=cmd_serve)

    dbp = sub.add_parser("db", help="database schema")
    dbsub = dbp.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="apply migrations up to head")
    _common(up)
    up.set_defaults(func=cmd_db_upgrade)
    cur = dbsub.add_parser("current", help="show the schema revision")
    _common(cur)
    cur.set_defaults(func=cmd_db_current)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"proxy: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
