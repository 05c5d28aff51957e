"""Browsing recorded traffic: exchanges page by page (keyset or offset), one exchange with its bodies,
sessions with their totals and re-sends, and the catalogue of models ever recorded: every read of the
CLI, the admin API and the dashboard beyond the usage reports in ``queries``.

Invariants:
- Pages are keyset pages over (``started_at``, ``id``), newest first: a cursor names the last row a page
  showed, so paging never skips or repeats a row while new exchanges arrive (offsets would), and every
  page costs one index range scan however deep it is. Cursors are opaque to callers; a malformed one
  raises QueryError.
- ``older``/``newer`` on a page are exact: each is set only when a row exists in that direction under
  the same filters. A "newer" page that reaches the newest rows is the first page itself, so paging back
  up always ends on the page a fresh load shows.
- The model catalogue ignores every filter and reads the daily rollup (one row per day x model x ...), so
  it is cheap at any table size and the same whatever a report is filtered to: the dashboard derives
  model colours and its model list from it.
- Listing rows are plain dicts and lists, JSON-ready through ``admin.views.encode``, the same for every
  caller; one exchange with its bodies is the one stored shape, ``store.stored.Stored``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.record.exchange import CostSource
from proxy.store import queries, rollup
from proxy.store.filters import IS_ERROR, Filters, QueryError, count_if, page_limit, utc, utc_row, where_clauses
from proxy.store.stored import Stored, read
from proxy.store.tables import exchange_bodies, exchange_links, exchanges, session_links, usage_daily

X = exchanges.c
SESSION_EXCHANGES_MAX = 1000


@dataclass(frozen=True)
class Cursor:
    started_at: datetime
    id: str

    def encode(self) -> str:
        text = f"{self.started_at.isoformat()}|{self.id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            stamp, sep, exchange_id = text.partition("|")
            started_at = datetime.fromisoformat(stamp)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            started_at, sep, exchange_id = None, "", ""
        if started_at is None or not sep or not exchange_id or started_at.tzinfo is None:
            raise QueryError("cursor: not a cursor this API returned (take older/newer from a page)")
        return cls(started_at, exchange_id)

    @classmethod
    def of(cls, row: dict[str, Any]) -> Cursor:
        return cls(row["started_at"], row["id"])


@dataclass
class KeysetPage:
    limit: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    older: str | None = None  # pass as ``before`` for the next older page
    newer: str | None = None  # pass as ``after`` for the next newer page


def _older_than(c: Cursor) -> ColumnElement[bool]:
    # The leading ``<=`` gives the planner an index range on started_at; the OR breaks ties by id.
    return and_(X.started_at <= c.started_at, or_(X.started_at < c.started_at, X.id < c.id))


def _newer_than(c: Cursor) -> ColumnElement[bool]:
    return and_(X.started_at >= c.started_at, or_(X.started_at > c.started_at, X.id > c.id))


async def _rows(
    conn: AsyncConnection, where: list[ColumnElement[bool]], *, newest_first: bool, limit: int
) -> list[dict[str, Any]]:
    order = (X.started_at.desc(), X.id.desc()) if newest_first else (X.started_at.asc(), X.id.asc())
    result = await conn.execute(select(*LIST_COLUMNS).where(*where).order_by(*order).limit(limit))
    return [utc_row(r._asdict()) for r in result]


async def _exists(conn: AsyncConnection, where: list[ColumnElement[bool]]) -> bool:
    return (await conn.scalar(select(X.id).where(*where).limit(1))) is not None


async def page_exchanges(
    conn: AsyncConnection,
    filters: Filters | None = None,
    *,
    limit: int = 50,
    before: str | None = None,
    after: str | None = None,
) -> KeysetPage:
    """One page of exchanges, newest first: the newest ones, those ``before`` a cursor, or ``after`` it."""
    if before and after:
        raise QueryError("give before or after, not both")
    limit = page_limit(limit)
    where = where_clauses(conn, filters or Filters())
    page = KeysetPage(limit=limit)
    if after:
        rows = await _rows(conn, [*where, _newer_than(Cursor.decode(after))], newest_first=False, limit=limit + 1)
        if len(rows) <= limit:  # reached the newest rows: show the first page, as a fresh load would
            return await page_exchanges(conn, filters, limit=limit)
        page.rows = rows[:limit][::-1]
        page.newer = Cursor.of(page.rows[0]).encode()
    else:
        bound = [_older_than(Cursor.decode(before))] if before else []
        rows = await _rows(conn, [*where, *bound], newest_first=True, limit=limit + 1)
        page.rows = rows[:limit]
        if before and page.rows and await _exists(conn, [*where, _newer_than(Cursor.of(page.rows[0]))]):
            page.newer = Cursor.of(page.rows[0]).encode()
    if page.rows and await _exists(conn, [*where, _older_than(Cursor.of(page.rows[-1]))]):
        page.older = Cursor.of(page.rows[-1]).encode()
    return page


def _link(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


async def session_detail(
    conn: AsyncConnection, session_id: str, *, limit: int = SESSION_EXCHANGES_MAX
) -> dict[str, Any] | None:
    """A session's totals (as in ``sessions``), its exchanges in recorded order (each with the id of
    the exchange it repeats, when it was re-sent), the session it was re-sent from and its own re-sends,
    each with its comparison summary. None when nothing was recorded under that id."""
    found = await _session_totals(conn, Filters(session=session_id), limit=1)
    source = (await conn.execute(select(session_links).where(session_links.c.session_id == session_id))).first()
    resends = await conn.execute(
        select(session_links)
        .where(session_links.c.source_session_id == session_id)
        .order_by(session_links.c.created_at, session_links.c.session_id)
    )
    resends_list = [_link(r) for r in resends]
    if not found and source is None and not resends_list:
        return None
    rows = await _rows(conn, [X.session_id == session_id], newest_first=False, limit=max(1, limit) + 1)
    repeats = await conn.execute(
        select(exchange_links.c.exchange_id, exchange_links.c.source_exchange_id)
        .join(exchanges, X.id == exchange_links.c.exchange_id)
        .where(X.session_id == session_id)
    )
    repeated = {new: old for new, old in repeats}
    for row in rows:
        row["repeats"] = repeated.get(row["id"])
    totals = found[0] if found else {"session": session_id, "requests": 0}
    return {
        **totals,
        "exchanges": rows[:limit],
        "exchanges_truncated": len(rows) > limit,
        "resent_from": _link(source) if source is not None else None,
        "resends": resends_list,
    }


async def sessions(conn: AsyncConnection, filters: Filters | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Recorded sessions, most recently active first, with totals, the models used, and each session's
    link: ``resent_from`` (its source, or None) and ``resends`` (how many sessions were re-sent from it)."""
    rows = await _session_totals(conn, filters, limit)
    names = [r["session"] for r in rows]
    if not names:
        return rows
    links = session_links.c
    sources = {
        name: source
        for name, source in await conn.execute(
            select(links.session_id, links.source_session_id).where(links.session_id.in_(names))
        )
    }
    counts = {
        source: int(n)
        for source, n in await conn.execute(
            select(links.source_session_id, func.count())
            .where(links.source_session_id.in_(names))
            .group_by(links.source_session_id)
        )
    }
    for r in rows:
        r["resent_from"] = sources.get(r["session"])
        r["resends"] = counts.get(r["session"], 0)
    return rows


async def models(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Every model ever recorded (reported, else requested), first seen first: the UTC day it was first and
    last seen and its request count. Unfiltered by design (see the module invariants)."""
    c = usage_daily.c
    name = queries.rollup_dimension(conn, usage_daily, "model")
    stmt = (
        select(name.label("model"), func.min(c.period), func.max(c.period), func.sum(c.requests))
        .group_by(name)
        .having(name.is_not(None))
    )
    rows = [
        {"model": model, "first_day": first, "last_day": last, "requests": int(requests or 0)}
        for model, first, last, requests in await conn.execute(stmt)
    ]
    for row in rows:
        for key in ("first_day", "last_day"):
            row[key] = utc(row[key]).date().isoformat() if row[key] is not None else None
    rows.sort(key=lambda r: (r["first_day"] or "", r["model"]))
    return rows


@dataclass
class Page:
    limit: int = 50
    offset: int = 0
    has_more: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)


COUNTS = ("requests", "errors", "unknown_cost", "missing_usage")
TOKENS = rollup.TOKENS


def _clean_totals(data: dict[str, Any]) -> None:
    """Driver-neutral numbers: ints for counts and tokens (PostgreSQL sums are Decimal), floats for cost."""
    for name in COUNTS:
        data[name] = int(data[name] or 0)
    for name in TOKENS:
        data[name] = int(data[name]) if data[name] is not None else None
    data["cost_usd"] = round(float(data["cost_usd"]), 9) if data["cost_usd"] is not None else None


def _totals() -> list[ColumnElement[Any]]:
    return [
        func.count().label("requests"),
        count_if(IS_ERROR).label("errors"),
        func.sum(X.prompt_tokens).label("prompt_tokens"),
        func.sum(X.completion_tokens).label("completion_tokens"),
        func.sum(X.cached_tokens).label("cached_tokens"),
        func.sum(X.reasoning_tokens).label("reasoning_tokens"),
        func.sum(X.total_tokens).label("total_tokens"),
        func.sum(X.cache_write_tokens).label("cache_write_tokens"),
        func.sum(X.cost_usd).label("cost_usd"),
        count_if(X.cost_source == str(CostSource.UNKNOWN)).label("unknown_cost"),
        count_if(X.usage_source == "missing").label("missing_usage"),
    ]


async def _session_totals(
    conn: AsyncConnection, filters: Filters | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Recorded sessions, most recently active first, with totals and the models used."""
    where = [*where_clauses(conn, filters or Filters()), X.session_id.is_not(None)]
    stmt = (
        select(
            X.session_id.label("session"),
            func.min(X.started_at).label("first_at"),
            func.max(X.started_at).label("last_at"),
            *_totals(),
        )
        .where(*where)
        .group_by(X.session_id)
        .order_by(func.max(X.started_at).desc())
        .limit(page_limit(limit))
    )
    rows = [r._asdict() for r in await conn.execute(stmt)]
    if not rows:
        return []
    model = func.coalesce(X.model, X.model_requested)
    names = [r["session"] for r in rows]
    pairs = await conn.execute(
        select(X.session_id, model).where(*where, X.session_id.in_(names)).group_by(X.session_id, model)
    )
    models: dict[str, list[str]] = {}
    for session_id, name in pairs:
        if name is not None:
            models.setdefault(session_id, []).append(name)
    for r in rows:
        r["models"] = sorted(models.get(r["session"], []))
        r["first_at"], r["last_at"] = utc(r["first_at"]), utc(r["last_at"])
        _clean_totals(r)
    return rows


LIST_COLUMNS = (
    X.id,
    X.started_at,
    X.api,
    X.session_id,
    X.upstream,
    X.method,
    X.path,
    X.model_requested,
    X.model,
    X.status,
    X.stream,
    X.outcome,
    X.finish_reason,
    X.error,
    X.duration_ms,
    X.ttft_ms,
    X.prompt_tokens,
    X.completion_tokens,
    X.cached_tokens,
    X.reasoning_tokens,
    X.total_tokens,
    X.cache_write_tokens,
    X.usage_source,
    X.cost_usd,
    X.cost_source,
    X.price_ref,
    X.key_fingerprint,
    X.end_user,
)


async def list_exchanges(
    conn: AsyncConnection,
    filters: Filters | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
    oldest_first: bool = False,
) -> Page:
    """Exchanges newest first (or oldest first), ``limit`` per page from ``offset``."""
    limit = page_limit(limit)
    order = (X.started_at.asc(), X.id.asc()) if oldest_first else (X.started_at.desc(), X.id.desc())
    stmt = (
        select(*LIST_COLUMNS)
        .where(*where_clauses(conn, filters or Filters()))
        .order_by(*order)
        .limit(limit + 1)
        .offset(max(0, offset))
    )
    rows = [utc_row(r._asdict()) for r in await conn.execute(stmt)]
    return Page(limit=limit, offset=offset, has_more=len(rows) > limit, rows=rows[:limit])


async def get_exchange(conn: AsyncConnection, exchange_id: str) -> Stored | None:
    """One exchange with its bodies (``body`` is None when bodies were not stored)."""
    joined = exchanges.outerjoin(exchange_bodies, exchange_bodies.c.exchange_id == X.id)
    row = (
        await conn.execute(select(exchanges, exchange_bodies).select_from(joined).where(X.id == exchange_id))
    ).first()
    return read(row._mapping) if row is not None else None


async def session_exchange_ids(conn: AsyncConnection, session_id: str) -> list[str]:
    result = await conn.execute(select(X.id).where(X.session_id == session_id).order_by(X.started_at.asc(), X.id.asc()))
    return [r[0] for r in result]
