"""Engine creation and the few database facts the proxy keeps about itself.

Invariants:
- SQLite gets ``busy_timeout``, ``synchronous=NORMAL`` and ``foreign_keys=ON`` on every connection and
  WAL once (it persists in the file); the recorder's writer is SQLite's only steady writer (the retention
  sweep and migrations wait on ``busy_timeout``).
- ``sibling_engine`` makes a second engine like one ``create_engine`` made (same URL, connect arguments,
  options and SQLite pragmas) with its own pool, for another thread's event loop (an asyncio connection
  belongs to the loop that opened it). An in-memory SQLite database has no sibling: another pool would
  open another, empty, database.
- ``DatabaseUnavailable`` is the one exception the CLI maps to "cannot reach the database" (exit 2).
"""

from __future__ import annotations

import secrets
import weakref
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import event, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from proxy.store.tables import proxy_meta

FINGERPRINT_SECRET_KEY = "fingerprint_secret"
# How each engine ``create_engine`` made was made, so ``sibling_engine`` can make another like it.
_MADE: weakref.WeakKeyDictionary[Engine, tuple[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


class DatabaseUnavailable(Exception):
    """The database could not be reached or used."""


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _json_dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def create_engine(
    url: str, *, connect_timeout: float = 5.0, command_timeout: float = 30.0, **kwargs: Any
) -> AsyncEngine:
    """An engine whose every wait is bounded, so a hung database stalls only the writer, briefly."""
    engine = _create(url, connect_timeout=connect_timeout, command_timeout=command_timeout, **kwargs)
    made = dict(kwargs, connect_timeout=connect_timeout, command_timeout=command_timeout)
    if "connect_args" in made:
        made["connect_args"] = dict(made["connect_args"])
    _MADE[engine.sync_engine] = (url, made)
    return engine


def sibling_engine(engine: AsyncEngine) -> AsyncEngine | None:
    """A new engine like ``engine`` with a pool of its own; None when it would not see the same database.

    None too for an engine ``create_engine`` did not make (its connect arguments are not known).
    """
    recipe = engine_recipe(engine)
    return None if recipe is None else create_engine(recipe[0], **recipe[1])


def engine_recipe(engine: AsyncEngine) -> tuple[str, dict[str, Any]] | None:
    """The URL and arguments that make an engine like ``engine`` (in this process or another one).

    None when another engine would not see the same database (in-memory SQLite, a pool given by the
    caller), or ``create_engine`` did not make this one (its connect arguments are not known).
    """
    made = _MADE.get(engine.sync_engine)
    if made is None:
        return None
    url, kwargs = made
    if is_sqlite(url) and (_in_memory(url) or "poolclass" in kwargs):
        return None
    return url, dict(kwargs)


def _in_memory(url: str) -> bool:
    database = make_url(url).database or ""
    return not database or database == ":memory:" or "mode=memory" in url


def _create(url: str, *, connect_timeout: float, command_timeout: float, **kwargs: Any) -> AsyncEngine:
    # JSON columns (headers, stream offsets) are encoded by msgspec: several times faster than json.dumps.
    kwargs.setdefault("json_serializer", _json_dumps)
    # Statement parameters are recorded traffic: never format them into error texts (health, logs) or logs.
    kwargs.setdefault("hide_parameters", True)
    if is_sqlite(url):
        connect_args = {"timeout": connect_timeout, **kwargs.pop("connect_args", {})}
        engine = create_async_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    connect_args = {"timeout": connect_timeout, "command_timeout": command_timeout, **kwargs.pop("connect_args", {})}
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    kwargs.setdefault("pool_timeout", connect_timeout)
    return create_async_engine(url, connect_args=connect_args, **kwargs)


def check_sqlite_path(url: str) -> None:
    """Fail fast, before aiosqlite starts a thread, when a SQLite file's folder does not exist."""
    if not is_sqlite(url):
        return
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).expanduser().resolve().parent
        if not folder.is_dir():
            raise FileNotFoundError(f"folder {folder} does not exist")


def sqlite_file_missing(url: str) -> bool:
    """A SQLite URL naming a file that does not exist (connecting would create it, empty)."""
    if not is_sqlite(url):
        return False
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    return not Path(database).expanduser().exists()


def redacted_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def enable_wal(engine: AsyncEngine) -> None:
    if engine.dialect.name == "sqlite" and ":memory:" not in str(engine.url):
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA journal_mode=WAL")


async def fingerprint_secret(engine: AsyncEngine, configured: str) -> bytes:
    """The secret for API-key fingerprints: configured, or made once and kept in the database.

    Kept in the database so every proxy process sharing it fingerprints a key the same way.
    """
    if configured:
        return configured.encode()
    async with engine.begin() as conn:
        value = await conn.scalar(select(proxy_meta.c.value).where(proxy_meta.c.key == FINGERPRINT_SECRET_KEY))
        if value is None:
            value = secrets.token_hex(32)
            await conn.execute(proxy_meta.insert().values(key=FINGERPRINT_SECRET_KEY, value=value))
    return value.encode()
