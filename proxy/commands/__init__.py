"""Subcommands of ``proxy``. Each module has ``register(subparsers)`` and thin command functions over
library code; ``proxy.cli`` imports and lists them. Shared argument handling lives here."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.config import ConfigError, Settings, load_settings

T = TypeVar("T")
Subparsers = Any  # argparse's _SubParsersAction is private


class CommandFailed(Exception):
    """A failure while the command was working (exit code 1); usage and configuration errors are
    ``ConfigError`` (exit code 2)."""


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
    replay = {
        key: value
        for key, value in (
            ("sessions", getattr(args, "from_session", None)),
            ("timing", getattr(args, "replay_timing", None)),
            ("speed", getattr(args, "replay_speed", None)),
            ("on_exhausted", getattr(args, "on_exhausted", None)),
            ("include_partial", getattr(args, "replay_partial", None) or None),
        )
        if value is not None
    }
    if replay:
        tree["replay"] = replay
    if getattr(args, "relay", None) is not None:
        tree["server"] = {"relay": args.relay}
    if getattr(args, "writer", None):
        tree["recorder"] = {"writer": args.writer}
    if getattr(args, "workers", None):
        tree["workers"] = args.workers
    return tree


def settings_from(args: argparse.Namespace, *, require_upstream: bool = False) -> Settings:
    return load_settings(getattr(args, "config", None), flags_tree(args), require_upstream=require_upstream)


NO_DATABASE_HINT = "`proxy serve` or `proxy db upgrade` makes one"


@asynccontextmanager
async def open_engine(settings: Settings, *, existing: bool = True) -> AsyncIterator[AsyncEngine]:
    """An engine that has answered once; an unreachable database is a ConfigError (exit code 2).

    ``existing``: the database must already hold the proxy's schema (every command that reads), checked
    before anything could create it: a SQLite file that does not exist is never made.
    """
    from proxy.store import db, migrate

    dbs = settings.database
    shown = db.redacted_url(dbs.url)
    if existing and db.sqlite_file_missing(dbs.url):
        raise ConfigError(f"database.url: no proxy database at {shown} (no such file); {NO_DATABASE_HINT}")
    engine = db.create_engine(dbs.url, connect_timeout=dbs.connect_timeout, command_timeout=dbs.command_timeout)
    try:
        try:
            db.check_sqlite_path(dbs.url)
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
            revision = await migrate.current_revision(engine) if existing else None
        except Exception as exc:  # noqa: BLE001 - every driver has its own error types
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise ConfigError(f"database.url: cannot connect to {shown}: {detail}") from None
        if existing and revision is None:
            raise ConfigError(f"database.url: no proxy database at {shown} (no proxy schema in it); {NO_DATABASE_HINT}")
        yield engine
    finally:
        await engine.dispose()


def run(coro_fn: Callable[[], Awaitable[T]], *, finish_first: bool = False) -> T:
    """Run a coroutine to its end; a Ctrl-C cancels it (KeyboardInterrupt once the loop has closed).

    ``finish_first``: a Ctrl-C lets it finish, then interrupts (a second one interrupts at once), for the
    database steps of a start-up and for migrations: a cancel there stops the driver mid-call, leaves an
    aiosqlite thread to report into a loop already closed (a traceback on the way out), and can stop
    a migration half-way.
    """

    async def main() -> T:
        return await coro_fn()

    if not finish_first:
        return asyncio.run(main())
    pressed: list[int] = []

    def later(signum: int, _frame: object) -> None:
        pressed.append(signum)
        if len(pressed) > 1:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, later)  # asyncio.run then leaves SIGINT alone
    try:
        result = asyncio.run(main())
    except Exception:
        if pressed:  # whatever it ended with, the user asked it to stop
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt
    return result


FORMATS = ("table", "json", "csv")


def add_filters(parser: argparse.ArgumentParser, *, errors: bool = False) -> None:
    """The report filters every listing command takes (same names as the admin API's query parameters)."""
    from proxy.timespec import HELP

    parser.add_argument("--since", metavar="T", help=f"from this time: {HELP}")
    parser.add_argument("--until", metavar="T", help="before this time (same forms as --since)")
    parser.add_argument("--model", metavar="M", help="reported or requested model name")
    parser.add_argument("--session", metavar="S", help="session id")
    parser.add_argument("--key", metavar="FP", help="API key fingerprint (fp_...)")
    parser.add_argument("--upstream", metavar="NAME", help="upstream name (default, or a [upstreams.NAME])")
    parser.add_argument("--user", metavar="U", help="the request's `user` field")
    parser.add_argument("--status", metavar="CODE", help="HTTP status the client got")
    if errors:
        parser.add_argument("--errors", action="store_true", help="only failed exchanges")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")


def filter_params(args: argparse.Namespace) -> dict[str, Any]:
    from proxy.admin.views import FILTER_KEYS

    return {name: getattr(args, name, None) for name in FILTER_KEYS}


def _cell(key: str, value: Any) -> str:
    from proxy.admin.figures import table_number

    if value is None:
        return "-"
    if isinstance(value, float):
        return table_number(key, value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def print_rows(rows: list[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> None:
    """Rows as an aligned table, a JSON array of objects, or CSV with a header line."""
    import csv
    import sys

    from proxy.admin.views import encode

    if fmt == "json":
        sys.stdout.write(encode(rows).decode() + "\n")
        return
    cols = list(columns or (rows[0].keys() if rows else []))
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(cols)
        for row in rows:
            writer.writerow([_csv_cell(c, row.get(c)) for c in cols])
        return
    if not rows:
        print("(no exchanges)")
        return
    cells = [[_cell(c, row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()


def _csv_cell(key: str, value: Any) -> Any:
    from proxy.admin.figures import csv_number

    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list):
        return " ".join(map(str, value))
    return csv_number(key, value)


def parsed_filters(args: argparse.Namespace, command: str) -> Any:
    """The report filters given on the command line; a bad value exits with one line naming it."""
    from proxy.admin.views import filters_from
    from proxy.store.filters import QueryError

    try:
        return filters_from(filter_params(args))
    except QueryError as exc:
        raise ConfigError(str(exc)) from None


def query_filtered(args: argparse.Namespace, command: str, fn: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run ``fn(connection, filters)`` against the configured database, with the command line's report filters."""
    filters = parsed_filters(args, command)
    settings = settings_from(args)

    async def go() -> T:
        async with open_engine(settings) as engine, engine.connect() as conn:
            return await fn(conn, filters)

    return run(lambda: go())
