"""Report filters and the SQL pieces every store reader shares: the filter clauses, what counts as an
error, page limits, and times in and out.

Invariants:
- Times in and out are aware UTC datetimes (SQLite stores naive UTC text, so binds drop the offset there).
- ``exchanges`` and the rollup tables answer the same filters through the same clauses (same column names).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, or_
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.record.exchange import Outcome
from proxy.store.tables import exchanges

X = exchanges.c
MAX_PAGE = 500


class QueryError(ValueError):
    """A bad report parameter; the message is fit to show the user."""


@dataclass
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    session: str | None = None
    key: str | None = None
    upstream: str | None = None
    user: str | None = None
    status: int | None = None
    errors_only: bool = False


def bind_time(conn: AsyncConnection, value: datetime) -> datetime:
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.replace(tzinfo=None) if conn.dialect.name == "sqlite" else value


def shared_clauses(
    conn: AsyncConnection, c: Any, time: Any, f: Filters, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    """The filters ``exchanges`` and the rollup tables both answer (same column names), on ``time``."""
    clauses: list[ColumnElement[bool]] = []
    if since is not None:
        clauses.append(time >= bind_time(conn, since))
    if until is not None:
        clauses.append(time < bind_time(conn, until))
    if f.model:
        clauses.append(or_(c.model == f.model, c.model_requested == f.model))
    if f.key:
        clauses.append(c.key_fingerprint == f.key)
    if f.upstream:
        clauses.append(c.upstream == f.upstream)
    if f.status is not None:
        clauses.append(c.status == f.status)
    return clauses


def where_clauses(conn: AsyncConnection, f: Filters) -> list[ColumnElement[bool]]:
    clauses = shared_clauses(conn, X, X.started_at, f, f.since, f.until)
    if f.session:
        clauses.append(X.session_id == f.session)
    if f.user:
        clauses.append(X.end_user == f.user)
    if f.errors_only:
        clauses.append(IS_ERROR)
    return clauses


# An error: the client got a 4xx/5xx (499 = it left) or the exchange did not complete normally.
IS_ERROR = or_(X.status >= 400, X.outcome != str(Outcome.COMPLETE))


def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def page_limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


def utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    return value


def utc_row(data: dict[str, Any]) -> dict[str, Any]:
    for name in ("started_at", "finished_at"):
        if name in data:
            data[name] = utc(data[name])
    return data
