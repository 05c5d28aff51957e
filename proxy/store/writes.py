"""Writing batches of exchanges (their rows come from ``store.stored``), idempotently, with the rollups.

Invariants:
- Inserts are idempotent (``ON CONFLICT DO NOTHING`` on the exchange id), so a batch re-sent from the
  spool after an ambiguous failure cannot duplicate or fail on records already stored. They return the
  ids they really added, so what the caller counts is what the database holds.
- One transaction per batch, executemany per table. The hourly rollup is incremented in the same
  transaction for exactly the exchanges that insert added.
- On SQLite the statements go straight to the driver (``_SqliteBatch``): SQLAlchemy compiles each one
  once and supplies its bind processors, so the rows stored are the same, but a batch costs a handful
  of trips to aiosqlite's thread instead of about thirty. Those trips, not the rows, were most of the
  CPU a proxy spent recording at a few requests per second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.record.exchange import Exchange
from proxy.store import rollup
from proxy.store.stored import body_row, exchange_row
from proxy.store.tables import exchange_bodies, exchanges


@cache
def _insert(dialect_name: str, table: Any, pk: str, *, returning: bool = False) -> Any:
    """``INSERT ... ON CONFLICT (pk) DO NOTHING``, built once per dialect (per batch, it cost real CPU)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table).on_conflict_do_nothing(index_elements=[pk])
    return stmt.returning(table.c[pk]) if returning else stmt


async def insert_exchanges(conn: AsyncConnection, batch: Sequence[Exchange]) -> set[str]:
    """Insert a batch inside the caller's transaction; the ids of the exchanges it added."""
    if not batch:
        return set()
    return await insert_rows(conn, [exchange_row(ex) for ex in batch], [body_row(ex) for ex in batch])


async def insert_rows(
    conn: AsyncConnection, exchange_rows: Sequence[dict[str, Any]], body_rows: Sequence[dict[str, Any]]
) -> set[str]:
    """Insert prepared rows (the writer's, or an import's) inside the caller's transaction; the ids added.

    Only rows this insert really added reach the rollups, so a re-sent batch cannot count twice.
    """
    if conn.dialect.name == "sqlite":
        return await _SqliteBatch(conn).insert(exchange_rows, body_rows)
    new: set[str] = set()
    if exchange_rows:
        inserted = await conn.execute(_insert(conn.dialect.name, exchanges, "id", returning=True), list(exchange_rows))
        new = set(inserted.scalars())
        await add_to_rollup(conn, [r for r in exchange_rows if r["id"] in new])
    if body_rows:
        await conn.execute(_insert(conn.dialect.name, exchange_bodies, "exchange_id"), list(body_rows))
    return new


async def add_to_rollup(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    for table, increments in rollup.deltas(rows):
        await conn.execute(rollup.upsert(conn.dialect.name, table), increments)


class _Compiled:
    """One statement compiled for the driver: its SQL, and how to turn a row dict into its parameters."""

    def __init__(self, stmt: Any, dialect: Dialect, keys: Sequence[str]) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        names = compiled.positiontup or ()
        self.sql = str(compiled)
        self.columns = tuple((name, _processor(compiled.binds[name].type, dialect)) for name in names)

    def params(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        columns = self.columns
        return [tuple(p(row[n]) if p is not None else row[n] for n, p in columns) for row in rows]


def _processor(type_: Any, dialect: Dialect) -> Any:
    return type_.dialect_impl(dialect).bind_processor(dialect)


@cache
def _compiled(stmt: Any, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
    """Compiled once per statement and set of row keys (the writer's rows always have the same keys)."""
    return _Compiled(stmt, dialect, keys)


class _SqliteBatch:
    """A batch written with the aiosqlite connection's own ``executemany``, inside the caller's transaction."""

    # SQLite's default limit on host parameters in one statement is 999 on older builds.
    ID_CHUNK = 900

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect

    async def insert(self, exchange_rows: Sequence[dict[str, Any]], body_rows: Sequence[dict[str, Any]]) -> set[str]:
        raw = (await self.conn.get_raw_connection()).driver_connection
        new: list[dict[str, Any]] = []
        if exchange_rows:
            new = await self._new_rows(raw, exchange_rows)
            await self._many(raw, _insert("sqlite", exchanges, "id"), new)
            for table, increments in rollup.deltas(new):
                await self._many(raw, rollup.upsert("sqlite", table), increments)
        if body_rows:
            await self._many(raw, _insert("sqlite", exchange_bodies, "exchange_id"), body_rows)
        return {row["id"] for row in new}

    async def _new_rows(self, raw: Any, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows whose id is not stored yet (nor repeated earlier in the batch): only those reach the rollups."""
        ids = [row["id"] for row in rows]
        stored: set[str] = set()
        for start in range(0, len(ids), self.ID_CHUNK):
            chunk = ids[start : start + self.ID_CHUNK]
            found = await raw.execute_fetchall(
                f"SELECT id FROM exchanges WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
            stored.update(r[0] for r in found)
        new = []
        for row in rows:
            if row["id"] not in stored:
                stored.add(row["id"])
                new.append(row)
        return new

    async def _many(self, raw: Any, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        compiled = _compiled(stmt, self.dialect, tuple(rows[0]))
        # One trip to aiosqlite's thread; the cursor is left to be collected (closing it is one more trip).
        await raw.executemany(compiled.sql, compiled.params(rows))
