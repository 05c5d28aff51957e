"""Keyset pages, session detail with re-send links, and the model catalogue, on both databases, against rows
written through the recorder's write path."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from proxy.record.exchange import Exchange
from proxy.store import browse, recordings
from proxy.store.filters import Filters, QueryError
from proxy.store.writes import insert_exchanges
from tests.support import Database

BASE = datetime(2026, 3, 1, 12, tzinfo=UTC)


async def seed(database: Database, n: int = 23) -> list[Exchange]:
    """``n`` exchanges over a day, in pairs: one pair in two shares a started_at exactly (ties broken by id),
    the other differs by a microsecond."""
    out = []
    for i in range(n):
        pair = i // 2
        started = BASE + timedelta(minutes=37 * pair, microseconds=i % 2 if pair % 2 else 0)
        ex = Exchange(
            started_at=started,
            method="POST",
            path="/v1/chat/completions",
            session_id="s-odd" if i % 2 else "s-even",
            requested_model=f"model-{i % 3}",
            status=500 if i % 5 == 0 else 200,
            duration_ms=10.0 + i,
        )
        out.append(ex)
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, out)
    return out


def newest_first(exs: list[Exchange]) -> list[str]:
    return [e.id for e in sorted(exs, key=lambda e: (e.started_at, e.id), reverse=True)]


async def walk(database: Database, filters: Filters, limit: int) -> tuple[list[str], list[browse.KeysetPage]]:
    seen: list[str] = []
    pages = []
    cursor = None
    async with database.engine.connect() as conn:
        while True:
            page = await browse.page_exchanges(conn, filters, limit=limit, before=cursor)
            pages.append(page)
            seen += [r["id"] for r in page.rows]
            if page.older is None:
                return seen, pages
            cursor = page.older


@pytest.mark.parametrize("limit", [1, 4, 7, 23, 50])
async def test_paging_older_reaches_every_row_once_in_order(database: Database, limit: int) -> None:
    exs = await seed(database)
    assert len({e.started_at for e in exs}) < len(exs)
    seen, pages = await walk(database, Filters(), limit)
    assert seen == newest_first(exs)
    assert pages[0].newer is None and all(p.newer is not None for p in pages[1:])
    assert all(len(p.rows) == limit for p in pages[:-1])


async def test_paging_keeps_filters_and_newer_pages_lead_back_to_the_first(database: Database) -> None:
    exs = await seed(database)
    f = Filters(errors_only=True)
    seen, pages = await walk(database, f, 2)
    assert seen == newest_first([e for e in exs if e.status == 500])
    f = Filters(session="s-odd")
    seen, pages = await walk(database, f, 3)
    assert seen == newest_first([e for e in exs if e.session_id == "s-odd"])
    async with database.engine.connect() as conn:
        first = await browse.page_exchanges(conn, f, limit=3)
        up = await browse.page_exchanges(conn, f, limit=3, after=pages[2].newer)
        assert [r["id"] for r in up.rows] == [r["id"] for r in pages[1].rows]
        assert up.newer is not None and up.older is not None
        top = await browse.page_exchanges(conn, f, limit=3, after=pages[1].newer)
        assert [r["id"] for r in top.rows] == [r["id"] for r in first.rows] and top.newer is None


async def test_bad_cursors_are_query_errors(database: Database) -> None:
    await seed(database, 3)
    async with database.engine.connect() as conn:
        for token in ("nope", "!!!", "MjAyNi0wMy0wMQ", browse.Cursor(BASE.replace(tzinfo=None), "x").encode()):
            with pytest.raises(QueryError, match="cursor"):
                await browse.page_exchanges(conn, before=token)
        with pytest.raises(QueryError, match="not both"):
            await browse.page_exchanges(conn, before="a", after="b")


async def test_session_detail_and_links(database: Database) -> None:
    exs = await seed(database, 6)
    even = [e for e in exs if e.session_id == "s-even"]
    copy = [Exchange(started_at=e.started_at + timedelta(days=1), session_id="s-even-b", method="POST") for e in even]
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, copy)
    summary = {"requests": 3, "changed": 1, "failed": 0}
    await recordings.save_links(
        database.engine,
        session_id="s-even-b",
        source_session_id="s-even",
        created_at=BASE + timedelta(days=2),
        target="http://127.0.0.1:9/v1",
        model=None,
        summary=summary,
        pairs=[(c.id, e.id) for c, e in zip(copy, even, strict=True)],
    )
    async with database.engine.connect() as conn:
        source = await browse.session_detail(conn, "s-even")
        resent = await browse.session_detail(conn, "s-even-b")
        listed = {r["session"]: r for r in await browse.sessions(conn)}
        assert await browse.session_detail(conn, "nothing-here") is None
    assert source is not None and resent is not None
    assert [r["id"] for r in source["exchanges"]] == [e.id for e in even]  # recorded order
    assert source["requests"] == 3 and source["errors"] == 1 and source["resent_from"] is None
    assert [(r["session_id"], r["summary"]) for r in source["resends"]] == [("s-even-b", summary)]
    assert resent["resent_from"]["source_session_id"] == "s-even" and resent["resends"] == []
    assert [r["repeats"] for r in resent["exchanges"]] == [e.id for e in even]
    assert (listed["s-even"]["resends"], listed["s-even"]["resent_from"]) == (1, None)
    assert (listed["s-even-b"]["resends"], listed["s-even-b"]["resent_from"]) == (0, "s-even")
    async with database.engine.connect() as conn:
        capped = await browse.session_detail(conn, "s-even", limit=2)
    assert capped is not None and len(capped["exchanges"]) == 2 and capped["exchanges_truncated"]


async def test_model_catalogue_ignores_filters_and_lists_first_seen_first(database: Database) -> None:
    late = Exchange(started_at=BASE - timedelta(days=3), requested_model="zz-early", method="POST")
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, [late])
    await seed(database, 6)
    async with database.engine.connect() as conn:
        rows = await browse.models(conn)
    assert [r["model"] for r in rows] == ["zz-early", "model-0", "model-1", "model-2"]
    assert rows[0] == {"model": "zz-early", "first_day": "2026-02-26", "last_day": "2026-02-26", "requests": 1}
    assert rows[1]["requests"] == 2 and rows[1]["first_day"] == "2026-03-01"


async def test_sessions_and_listing(database: Database, recorded: list[Exchange]) -> None:
    async with database.engine.connect() as conn:
        sessions = await browse.sessions(conn)
        page = await browse.list_exchanges(conn, Filters(session="suite-b"), limit=5)
        page2 = await browse.list_exchanges(conn, Filters(session="suite-b"), limit=5, offset=5)
        detail = await browse.get_exchange(conn, recorded[0].id)
    by_session = defaultdict(list)
    for e in recorded:
        if e.session_id:
            by_session[e.session_id].append(e)

    def last_active(name: str) -> float:
        return max(e.started_at.timestamp() for e in by_session[name])

    assert [s["session"] for s in sessions] == sorted(by_session, key=last_active, reverse=True)
    for s in sessions:
        members = by_session[s["session"]]
        assert s["requests"] == len(members)
        assert s["first_at"] == min(e.started_at for e in members)
        assert s["models"] == sorted({e.returned_model or e.requested_model for e in members})
    newest = sorted(by_session["suite-b"], key=lambda e: e.started_at, reverse=True)
    assert [r["id"] for r in page.rows + page2.rows] == [e.id for e in newest[:10]]
    assert page.has_more
    assert detail is not None and detail.id == recorded[0].id and detail.body is not None
    # The one stored shape reads back what the writer stored, usage included.
    first = recorded[0]
    assert (detail.api, detail.usage, detail.cost_usd) == (first.api, first.usage, first.cost_usd)
