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

from proxy.admin.figures import readable
from proxy.apis.codec import decode_json
from proxy.store.filters import Filters, QueryError
from proxy.store.stored import Stored, StoredBody
from proxy.timespec import parse_time

ENCODER = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    """JSON for people and programs: costs exact to 10 places, durations to 0.01 ms (``figures``)."""
    return ENCODER.encode(readable(value))


def _body(data: bytes | None) -> Any:
    if data is None:
        return None
    decoded = decode_json(data)
    return decoded if decoded is not None else data.decode("utf-8", "replace")


def exchange_detail(stored: Stored, *, raw: bool = False) -> dict[str, Any]:
    """The full record of one exchange (``browse.get_exchange``) as a JSON-ready document."""
    body = stored.body or StoredBody()
    response_body = body.response_body
    doc: dict[str, Any] = {
        "id": stored.id,
        "session": stored.session_id,
        "started_at": stored.started_at,
        "finished_at": stored.finished_at,
        "api": stored.api,
        "upstream": stored.upstream,
        "method": stored.method,
        "path": stored.path,
        "status": stored.status,
        "upstream_status": stored.upstream_status,
        "outcome": stored.outcome,
        "error": stored.error,
        "stream": stored.stream,
        "finish_reason": stored.finish_reason,
        "model_requested": stored.model_requested,
        "model": stored.model,
        "key_fingerprint": stored.key_fingerprint,
        "user": stored.end_user,
        "usage": msgspec.structs.asdict(stored.usage),
        "cost": {"usd": stored.cost_usd, "source": stored.cost_source, "price_ref": stored.price_ref},
        "timing": {"duration_ms": stored.duration_ms, "ttft_ms": stored.ttft_ms},
        "request": {"headers": body.request_headers, "body": _body(body.request_body)},
        "response": {
            "headers": body.response_headers,
            # A stream's body is SSE bytes: show the folded completion, keep the bytes for --raw.
            "body": None if stored.stream else _body(response_body),
            "assembled": decode_json(body.assembled.encode()) if body.assembled else None,
        },
        "stream_info": {
            "event_count": body.event_count,
            "decode_errors": body.decode_errors,
            "usage_injected": body.usage_injected,
            "reads": len(body.stream_chunks),
        },
    }
    if raw:
        doc["raw"] = response_body.decode("utf-8", "replace") if response_body is not None else None
        doc["stream_chunks"] = [list(c) for c in body.stream_chunks] or None
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
