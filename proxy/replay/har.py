"""HAR 1.2 (the browser dev-tools archive format) for an exported session. Pure, no I/O.

Invariants:
- Built from export ``Record``s, so it carries the same (secret-free) headers and bodies as the JSONL,
  except that a response is what the client received: the part a client that left early got, less the
  usage chunk the proxy asked for on behalf of a client that did not (hidden by the API family's filter,
  as it was live).
- URLs are the upstream's base URL (credentials stripped) plus the path below ``/v1``; an upstream not
  in the configuration gets ``http://NAME.upstream.invalid/v1``.
- Proxy-specific facts ride in underscore fields (``_exchangeId``, ``_session``, ``_usage``, ``_ttftMs``),
  as HAR allows for custom data.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

from yarl import URL

from proxy.apis.families import family_for
from proxy.replay.export import Record, restore_body

# A recording's events are no larger than the live filter let through.
MAX_EVENT_BYTES = 16 << 20


def _base(name: str, base_urls: Mapping[str, str]) -> str:
    url = base_urls.get(name)
    if not url:
        return f"http://{name}.upstream.invalid/v1"
    return str(URL(url).with_user(None).with_password(None)).rstrip("/")


def _content(data: bytes | None, mime: str) -> dict[str, Any]:
    data = data or b""
    try:
        return {"size": len(data), "mimeType": mime, "text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"size": len(data), "mimeType": mime, "text": base64.b64encode(data).decode(), "encoding": "base64"}


def _headers(headers: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in headers.items()]


def _reason(status: int | None) -> str:
    try:
        return HTTPStatus(status or 0).phrase
    except ValueError:
        return ""


def received(record: Record, body: bytes | None) -> bytes | None:
    """The response body as the client received it."""
    if body is None:
        return None
    if record.delivered_bytes is not None:
        body = body[: record.delivered_bytes]
    hide = family_for(record.method, record.path).hiding_filter(MAX_EVENT_BYTES) if record.usage_injected else None
    return hide.feed(body) + hide.close() if hide is not None else body


def entry(record: Record, base_urls: Mapping[str, str]) -> dict[str, Any]:
    request_body, _ = restore_body(record.request.body)
    response_body, chunks = restore_body(record.response.body)
    response_body = received(record, response_body)
    duration = record.duration_ms or 0.0
    wait = chunks[0][0] if chunks else duration
    url = _base(record.upstream, base_urls) + "/" + record.path.removeprefix("/v1/")
    req_mime = record.request.headers.get("content-type", "application/json")
    request: dict[str, Any] = {
        "method": record.method,
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": _headers(record.request.headers),
        "queryString": [],
        "headersSize": -1,
        "bodySize": len(request_body or b""),
    }
    if request_body:
        request["postData"] = {"mimeType": req_mime, "text": request_body.decode("utf-8", "replace")}
    return {
        "startedDateTime": record.started_at.isoformat(),
        "time": duration,
        "request": request,
        "response": {
            "status": record.status or 0,
            "statusText": _reason(record.status),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _headers(record.response.headers),
            "content": _content(response_body, record.response.headers.get("content-type", "")),
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": len(response_body or b""),
        },
        "cache": {},
        "timings": {"send": 0, "wait": wait, "receive": max(duration - wait, 0.0)},
        "_exchangeId": record.id,
        "_session": record.session_id,
        "_outcome": record.outcome,
        "_ttftMs": record.ttft_ms,
        "_usage": {
            "prompt_tokens": record.usage.prompt_tokens,
            "completion_tokens": record.usage.completion_tokens,
            "total_tokens": record.usage.total_tokens,
        },
    }


def to_har(records: Iterable[Record], base_urls: Mapping[str, str], version: str) -> dict[str, Any]:
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "llm-recording-proxy", "version": version},
            "pages": [],
            "entries": [entry(r, base_urls) for r in records],
        }
    }
