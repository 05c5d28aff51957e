"""``proxy db upgrade`` and ``proxy db current``: the schema is made and changed only by Alembic."""

from __future__ import annotations

import argparse

from proxy.commands import Subparsers, add_common, open_engine, run, settings_from
from proxy.config import ConfigError, Settings
from proxy.store import db, migrate


async def prepare_database(settings: Settings, *, upgrade: bool) -> str:
    """Check the database answers, switch SQLite to WAL, optionally migrate; returns the revision line."""
    async with open_engine(settings, existing=False) as engine:
        await db.enable_wal(engine)
        rev = await migrate.current_revision(engine)
        if upgrade and rev != migrate.HEAD:  # at head, Alembic is not even imported
            await migrate.upgrade(engine)
            rev = await migrate.current_revision(engine)
    state = "up to date" if rev == migrate.HEAD else f"head is {migrate.HEAD}"
    return f"{rev or '(empty)'} ({state})"


def cmd_upgrade(args: argparse.Namespace) -> int:
    print(run(lambda: prepare_database(settings_from(args), upgrade=True), finish_first=True))
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    if db.sqlite_file_missing(settings.database.url):  # connecting would create it
        raise ConfigError(f"database.url: no proxy database at {db.redacted_url(settings.database.url)} (no such file)")
    print(run(lambda: prepare_database(settings, upgrade=False)))
    return 0


def register(sub: Subparsers) -> None:
    dbp = sub.add_parser("db", help="database schema (Alembic migrations)")
    dbsub = dbp.add_subparsers(dest="db_command", metavar="subcommand")
    up = dbsub.add_parser("upgrade", help="apply migrations up to head")
    add_common(up)
    up.set_defaults(func=cmd_upgrade)
    cur = dbsub.add_parser("current", help="show the schema revision")
    add_common(cur)
    cur.set_defaults(func=cmd_current)
