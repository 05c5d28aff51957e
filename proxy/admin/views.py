"""Shapes shared by the CLI and the admin API: report filters from strings, one exchange as a readable
document, JSON encoding.

Invariants:
- Bodies are shown decoded (JSON when they are JSON, text otherwise); raw stream bytes only on request.
- Headers were redacted before they were stored; nothing here can reveal a key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from proxy.apis.codec import decode_json
from proxy.store.queries import Filters, QueryError
from proxy.timespec import parse_time

ENCODER = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return ENCODER.encode(value)


def _body(data: bytes | None) -> Any:
    if data is None:
        return None
    decoded = decode_json(data)
    return decoded if decoded is not None else data.decode("utf-8", "replace")


def exchange_detail(row: dict[str, Any], *, raw: bool = False) -> dict[str, Any]:
    """The full record of one exchange (``queries.get_exchange`` output) as a JSON-ready document."""
    body = row.get("body") or {}
    stream = bool(row["stream"])
    response_body = body.get("response_body")
    doc: dict[str, Any] = {
        "id": row["id"],
        "session": row["session_id"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "upstream": row["upstream"],
        "method": row["method"],
        "path": row["path"],
        "status": row["status"],
        "upstream_status": row["upstream_status"],
        "outcome": row["outcome"],
        "error": row["error"],
        "stream": stream,
        "finish_reason": row["finish_reason"],
        "model_requested": row["model_requested"],
        "model": row["model"],
        "key_fingerprint": row["key_fingerprint"],
        "user": row["end_user"],
        "usage": {
            "prompt_tokens": row["prompt_tokens"],
            "completion_tokens": row["completion_tokens"],
            "total_tokens": row["total_tokens"],
            "cached_tokens": row["cached_tokens"],
            "reasoning_tokens": row["reasoning_tokens"],
            "source": row["usage_source"],
        },
        "cost": {"usd": row["cost_usd"], "source": row["cost_source"], "price_ref": row["price_ref"]},
        "timing": {"duration_ms": row["duration_ms"], "ttft_ms": row["ttft_ms"]},
        "request": {"headers": body.get("request_headers"), "body": _body(body.get("request_body"))},
        "response": {
            "headers": body.get("response_headers"),
            # A stream's body is SSE bytes: show the folded completion, keep the bytes for --raw.
            "body": None if stream else _body(response_body),
            "assembled": decode_json(body["assembled"].encode()) if body.get("assembled") else None,
        },
        "stream_info": {
            "event_count": body.get("event_count"),
            "decode_errors": body.get("decode_errors"),
            "usage_injected": body.get("usage_injected"),
            "reads": len(body.get("stream_chunks") or []),
        },
    }
    if raw:
        doc["raw"] = response_body.decode("utf-8", "replace") if response_body is not None else None
        doc["stream_chunks"] = body.get("stream_chunks")
    return doc


FILTER_KEYS = ("since", "until", "model", "session", "key", "upstream", "user", "status", "errors")


def filters_from(params: Mapping[str, Any]) -> Filters:
    """Filters from CLI options or query parameters (strings); bad values raise QueryError."""

    def text(name: str) -> str | None:
        value = params.get(name)
        return str(value) if value not in (None, "") else None

    try:
        since = parse_time(text("since")) if text("since") else None
        until = parse_time(text("until")) if text("until") else None
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    status = text("status")
    if status is not None and not status.isdigit():
        raise QueryError(f"status must be an HTTP status code, got {status!r}")
    errors = params.get("errors")
    return Filters(
        since=since,
        until=until,
        model=text("model"),
        session=text("session"),
        key=fingerprint_filter(text("key")),
        upstream=text("upstream"),
        user=text("user"),
        status=int(status) if status is not None else None,
        errors_only=errors is True or str(errors).lower() in ("1", "true", "yes"),
    )


# --- dashboard (issue 13): the key filter ---
FINGERPRINT = re.compile(r"fp_[0-9a-f]{1,64}")


def fingerprint_filter(value: str | None) -> str | None:
    """The key filter is a fingerprint as the reports show it (``fp_`` + hex); anything else matches nothing.
    The message shows only the start of a bad value: it may be a pasted API key."""
    if value is None or FINGERPRINT.fullmatch(value):
        return value
    shown = repr(value) if len(value) <= 8 else repr(value[:6] + "...")
    raise QueryError(
        f"key must be an API key fingerprint: fp_ and hex digits, as 'proxy usage --by key' shows (got {shown})"
    )
