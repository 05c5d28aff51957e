"""One stored exchange: the rows the writer makes of an Exchange, and the one shape they are read back as.

Invariants:
- ``exchange_row``/``body_row`` are the only code that turns an Exchange into rows; ``read`` is the only
  code that turns rows back into an exchange (``Stored``). Recordings, playback, export, re-send,
  the exchange views and re-pricing all derive from ``Stored``; nothing else reads exchange columns by
  name, so a new column is added here, in ``tables`` and in a migration, and nowhere else.
- Token counts use the one ``Usage`` shape of ``record.exchange`` (NULL columns are None, never 0).
- Bodies are as stored: request as the client sent it (masked), response decoded, streams as raw SSE
  with one ``(offset_ms, end_byte)`` per network read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from proxy.record.exchange import Ending, Exchange, Usage, UsageSource

TOKEN_COLUMNS = tuple(name for name in Usage.__struct_fields__ if name != "source")


class StoredBody(msgspec.Struct, kw_only=True):
    request_headers: dict[str, str] = {}
    request_body: bytes | None = None
    response_headers: dict[str, str] = {}
    response_body: bytes | None = None
    assembled: str | None = None  # a stream folded into the JSON a non-streamed call returns
    stream_chunks: list[tuple[float, int]] = []
    event_count: int = 0
    decode_errors: int = 0
    usage_injected: bool = False
    delivered_bytes: int | None = None  # of the response body, what the client got; None: all of it
    response_bytes: int | None = None  # of the response body, how many passed; None: not counted (old rows)
    response_truncated: bool = False  # the stored body is only the head (``max_record_bytes``)


class ExchangeFields(msgspec.Struct, kw_only=True):
    """The columns of an exchange that may leave the database (an export carries these and its bodies)."""

    id: str
    session_id: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: float | None = None
    ttft_ms: float | None = None
    api: str = "other"
    method: str
    path: str
    upstream: str = "default"
    model_requested: str | None = None
    model: str | None = None
    status: int | None = None
    upstream_status: int | None = None
    stream: bool = False
    outcome: str = "complete"
    finish_reason: str | None = None
    error: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)
    cost_usd: float | None = None
    cost_source: str | None = None
    price_ref: str | None = None
    end_user: str | None = None


class Stored(ExchangeFields, kw_only=True):
    """One stored exchange as read back: every column, and its bodies when they were loaded."""

    key_fingerprint: str | None = None
    match_key: str | None = None
    body: StoredBody | None = None  # None when the bodies were not loaded (or never stored)


# Stored fields that are ``exchanges`` columns of the same name.
PLAIN_COLUMNS = tuple(name for name in Stored.__struct_fields__ if name not in ("usage", "body"))
BODY_COLUMNS = StoredBody.__struct_fields__


def exchange_row(ex: Exchange) -> dict[str, Any]:
    """The ``exchanges`` row of a finished, decoded Exchange."""
    usage = ex.usage
    return {
        "id": ex.id,
        "session_id": ex.session_id,
        "started_at": ex.started_at,
        "finished_at": ex.finished_at,
        "duration_ms": ex.duration_ms,
        "ttft_ms": ex.ttft_ms,
        "api": ex.api,
        "method": ex.method,
        "path": ex.path,
        "upstream": ex.upstream,
        "model_requested": ex.requested_model,
        "model": ex.returned_model,
        "status": ex.status,
        "upstream_status": ex.upstream_status,
        "stream": ex.stream,
        "outcome": str(ex.outcome),
        "finish_reason": ex.finish_reason,
        "error": ex.error,
        **{name: getattr(usage, name) for name in TOKEN_COLUMNS},
        "usage_source": str(usage.source),
        "cost_usd": ex.cost_usd,
        "cost_source": str(ex.cost_source) if ex.cost_source is not None else None,
        "price_ref": ex.price_ref,
        "key_fingerprint": ex.key_fingerprint,
        "end_user": ex.user,
        "match_key": ex.match_key,
    }


def body_row(ex: Exchange) -> dict[str, Any]:
    """The ``exchange_bodies`` row of a finished, decoded Exchange (bodies only when it keeps them)."""
    keep = ex.store_bodies
    response_headers, response_body = ex.stored_response()
    # Counted like the stored body (decoded), and only kept when the client did not get all of it.
    cut = ex.ending is not Ending.BODY_END and ex.delivered < ex.response_bytes
    return {
        "exchange_id": ex.id,
        "request_headers": ex.request_headers,
        "request_body": ex.request_body if keep else None,
        "response_headers": response_headers,
        "response_body": response_body if keep else None,
        "assembled": ex.assembled.decode("utf-8", "replace") if keep and ex.assembled else None,
        "stream_chunks": [list(c) for c in ex.stream_chunks] if ex.stream_chunks else None,
        "event_count": ex.event_count,
        "decode_errors": ex.decode_errors,
        "usage_injected": ex.usage_injected,
        "delivered_bytes": ex.delivered if cut else None,
        "response_bytes": ex.response_bytes,
        "response_truncated": ex.truncated,
    }


def rows(stored: Stored) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The rows of a ``Stored`` exchange (an import): the inverse of ``read``."""
    exchange = {name: getattr(stored, name) for name in PLAIN_COLUMNS}
    exchange.update({name: getattr(stored.usage, name) for name in TOKEN_COLUMNS})
    exchange["usage_source"] = str(stored.usage.source)
    body = stored.body
    if body is None:
        return exchange, None
    data = {name: getattr(body, name) for name in BODY_COLUMNS}
    data["stream_chunks"] = [list(c) for c in body.stream_chunks] if body.stream_chunks else None
    return exchange, {"exchange_id": stored.id, **data}


def read(row: Mapping[str, Any]) -> Stored:
    """A row of ``exchanges`` (joined with ``exchange_bodies`` when its columns are present) as ``Stored``."""
    usage = Usage(**{name: row[name] for name in TOKEN_COLUMNS if name in row})
    if row.get("usage_source"):
        usage.source = UsageSource(row["usage_source"])
    body = None
    if row.get("exchange_id") is not None:
        body = StoredBody(
            request_headers=dict(row.get("request_headers") or {}),
            request_body=_bytes(row.get("request_body")),
            response_headers=dict(row.get("response_headers") or {}),
            response_body=_bytes(row.get("response_body")),
            assembled=row.get("assembled"),
            stream_chunks=[(float(o), int(e)) for o, e in row.get("stream_chunks") or ()],
            event_count=row.get("event_count") or 0,
            decode_errors=row.get("decode_errors") or 0,
            usage_injected=bool(row.get("usage_injected")),
            delivered_bytes=row.get("delivered_bytes"),
            response_bytes=row.get("response_bytes"),
            response_truncated=bool(row.get("response_truncated")),
        )
    plain = {name: row[name] for name in PLAIN_COLUMNS if name in row}
    return Stored(**plain, usage=usage, body=body)


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)
