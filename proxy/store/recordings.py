"""Reading recordings back: the replay index's lookups, re-keying, and whole sessions for export/re-send.

Invariants:
- Replay lookups go through the indexed ``exchanges.match_key`` column and return ids in recorded order
  (``started_at``, then id, which is time-ordered too); bodies are loaded one recording at a time.
- Only recordings with a stored response body can be replayed; partial ones (the client left, the
  upstream cut or timed out, the proxy refused or could not connect) only when asked for.
- Re-keying rewrites ``match_key`` alone, a value derived from the stored request; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Select, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.store.stored import Stored, read
from proxy.store.tables import exchange_bodies, exchange_links, exchanges, session_links

# Outcomes whose response is what the upstream meant to send (an error event is a complete answer).
COMPLETE_OUTCOMES = ("complete", "upstream_error_event")
REKEY_BATCH = 500


def _scoped(query: Select[Any], sessions: Sequence[str] | None) -> Select[Any]:
    return query if sessions is None else query.where(exchanges.c.session_id.in_(list(sessions)))


def _joined(*columns: Any) -> Select[Any]:
    return select(*columns).select_from(
        exchanges.join(exchange_bodies, exchange_bodies.c.exchange_id == exchanges.c.id)
    )


async def ids_for_key(
    engine: AsyncEngine, key: str, sessions: Sequence[str] | None, *, include_partial: bool
) -> list[str]:
    query = _joined(exchanges.c.id, exchanges.c.session_id).where(
        exchanges.c.match_key == key,
        exchange_bodies.c.response_body.is_not(None),
        exchanges.c.status.is_not(None),
    )
    if not include_partial:
        query = query.where(exchanges.c.outcome.in_(COMPLETE_OUTCOMES))
    query = query.order_by(exchanges.c.started_at, exchanges.c.id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    # Sessions are filtered here, not in SQL: given both, SQLite's planner picks the session index and
    # scans a whole (possibly huge) session instead of the few rows of one key.
    wanted = None if sessions is None else set(sessions)
    return [r.id for r in rows if wanted is None or r.session_id in wanted]


async def load_recording(engine: AsyncEngine, exchange_id: str) -> Stored | None:
    """One recording with its bodies; None when it is gone or has no stored response."""
    query = _joined(exchanges, exchange_bodies).where(exchanges.c.id == exchange_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None or row.response_body is None:
        return None
    return read(row._mapping)


class Keyable(msgspec.Struct):
    """What the match key is computed from, for one stored exchange."""

    id: str
    method: str
    path: str
    upstream: str
    match_key: str | None
    request_body: bytes


async def keys_to_check(
    engine: AsyncEngine, sessions: Sequence[str] | None, prefix: str, after: str, limit: int = REKEY_BATCH
) -> list[Keyable]:
    """Stored requests (id order, after ``after``) whose key was made under rules other than ``prefix``, or none."""
    query = _joined(
        exchanges.c.id,
        exchanges.c.method,
        exchanges.c.path,
        exchanges.c.upstream,
        exchanges.c.match_key,
        exchange_bodies.c.request_body,
    ).where(
        exchanges.c.id > after,
        exchange_bodies.c.request_body.is_not(None),
        or_(exchanges.c.match_key.is_(None), exchanges.c.match_key.not_like(prefix + "%")),
    )
    query = _scoped(query, sessions).order_by(exchanges.c.id).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [Keyable(r.id, r.method, r.path, r.upstream, r.match_key, bytes(r.request_body)) for r in rows]


async def set_match_keys(engine: AsyncEngine, keys: dict[str, str]) -> None:
    """Rewrite ``match_key`` alone for the given exchange ids."""
    if not keys:
        return
    stmt = update(exchanges).where(exchanges.c.id == bindparam("b_id")).values(match_key=bindparam("b_key"))
    async with engine.begin() as conn:
        await conn.execute(stmt, [{"b_id": k, "b_key": v} for k, v in keys.items()])


class RecordedRequest(msgspec.Struct):
    id: str
    session_id: str | None
    started_at: datetime
    body: bytes


async def recent_requests(
    engine: AsyncEngine, sessions: Sequence[str] | None, method: str, path: str, upstream: str, limit: int
) -> list[RecordedRequest]:
    """The latest recorded requests to the same endpoint: the candidates a miss message compares."""
    query = _joined(
        exchanges.c.id, exchanges.c.session_id, exchanges.c.started_at, exchange_bodies.c.request_body
    ).where(
        exchanges.c.method == method,
        exchanges.c.path == path,
        exchanges.c.upstream == upstream,
        exchange_bodies.c.request_body.is_not(None),
    )
    query = _scoped(query, sessions).order_by(exchanges.c.started_at.desc(), exchanges.c.id.desc()).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [RecordedRequest(r.id, r.session_id, r.started_at, bytes(r.request_body)) for r in rows]


async def count_recordings(engine: AsyncEngine, sessions: Sequence[str] | None) -> int:
    query = _scoped(select(func.count()).select_from(exchanges), sessions)
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


def _with_bodies() -> Select[Any]:
    return select(exchanges, exchange_bodies).select_from(
        exchanges.outerjoin(exchange_bodies, exchange_bodies.c.exchange_id == exchanges.c.id)
    )


async def session_exchanges(engine: AsyncEngine, session_id: str) -> list[Stored]:
    """Every exchange of a session with its bodies, in recorded order (export and re-send)."""
    query = _with_bodies().where(exchanges.c.session_id == session_id).order_by(exchanges.c.started_at, exchanges.c.id)
    async with engine.connect() as conn:
        return [read(r._mapping) for r in await conn.execute(query)]


async def exchanges_by_id(engine: AsyncEngine, ids: Sequence[str]) -> dict[str, Stored]:
    """Exchanges with their bodies, by id."""
    query = _with_bodies().where(exchanges.c.id.in_(list(ids)))
    async with engine.connect() as conn:
        return {r.id: read(r._mapping) for r in await conn.execute(query)}


async def existing_ids(engine: AsyncEngine, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    async with engine.connect() as conn:
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            found.update((await conn.scalars(select(exchanges.c.id).where(exchanges.c.id.in_(chunk)))).all())
    return found


async def session_exists(engine: AsyncEngine, session_id: str) -> bool:
    query = select(exchanges.c.id).where(exchanges.c.session_id == session_id).limit(1)
    async with engine.connect() as conn:
        return (await conn.scalar(query)) is not None


async def save_links(
    engine: AsyncEngine,
    *,
    session_id: str,
    source_session_id: str,
    created_at: datetime,
    target: str,
    model: str | None,
    summary: dict[str, Any],
    pairs: Sequence[tuple[str, str]],
) -> None:
    """Link a re-sent session, and each of its exchanges (new id, source id), to what it repeats."""
    async with engine.begin() as conn:
        await conn.execute(
            session_links.insert().values(
                session_id=session_id,
                source_session_id=source_session_id,
                relation="resend",
                created_at=created_at,
                target=target,
                model=model,
                summary=summary,
            )
        )
        if pairs:
            await conn.execute(
                exchange_links.insert(), [{"exchange_id": new, "source_exchange_id": old} for new, old in pairs]
            )


async def links_of(engine: AsyncEngine, session_id: str) -> dict[str, Any] | None:
    """The link row of a re-sent session, with its exchange pairs (new id -> source id)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(session_links).where(session_links.c.session_id == session_id))).first()
        if row is None:
            return None
        pairs = await conn.execute(
            select(exchange_links)
            .join(exchanges, exchanges.c.id == exchange_links.c.exchange_id)
            .where(exchanges.c.session_id == session_id)
        )
        return {**dict(row._mapping), "pairs": {p.exchange_id: p.source_exchange_id for p in pairs}}
