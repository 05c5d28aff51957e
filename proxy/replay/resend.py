"""Re-sending a recorded session's requests to a proxy that records them as a new session.

Invariants:
- Requests go out in their recorded order; with ``concurrency`` N at most N are in flight, started in
  that order (asyncio's semaphore wakes waiters first in, first out).
- What is sent is what was recorded, less anything secret or hop-by-hop: stored credentials are
  redacted anyway, the caller's key (if any) is added, and the session header names the new session.
- A failure to send is a result (``error``), never an exception: one bad request does not stop a run. An
  error the proxy made itself (``X-Proxy-Error``: the target never answered) is such a failure too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aiohttp
import msgspec

from proxy.headers import EXCHANGE_ID_HEADER, HOP_BY_HOP, PROXY_ERROR_HEADER
from proxy.record.redact import REDACTED, SECRET_HEADERS
from proxy.store.stored import Stored

_DROP = HOP_BY_HOP | SECRET_HEADERS | {"host", "content-length", "accept-encoding"}
_ANY = msgspec.json.Decoder()
_ENC = msgspec.json.Encoder()


def _proxy_error(body: bytes, code: str) -> str:
    try:
        message = _ANY.decode(body)["error"]["message"]
    except (msgspec.DecodeError, UnicodeDecodeError, KeyError, TypeError):
        message = code
    return str(message)[:300]


class Sent(msgspec.Struct):
    source_id: str
    new_id: str | None = None
    status: int | None = None
    error: str | None = None


def request_body(stored: Stored, model: str | None) -> bytes:
    body = stored.body.request_body if stored.body is not None else None
    body = body or b""
    if model is None:
        return body
    try:
        obj = _ANY.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return body
    if isinstance(obj, dict) and "model" in obj:
        obj["model"] = model
        return _ENC.encode(obj)
    return body


def request_headers(stored: Stored, session_header: str, session: str, api_key: str | None) -> dict[str, str]:
    drop = _DROP | {session_header.lower()}
    recorded = stored.body.request_headers if stored.body is not None else {}
    headers = {k: v for k, v in recorded.items() if k not in drop and v != REDACTED}
    headers[session_header] = session
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def resend(
    rows: Sequence[Stored],
    base_url: str,
    *,
    session: str,
    session_header: str,
    api_key: str | None,
    model: str | None,
    concurrency: int,
    progress: Callable[[Sent], None] = lambda _: None,
) -> list[Sent]:
    """Send every row's request to ``base_url`` (a proxy root); results in the rows' order."""
    import asyncio

    gate = asyncio.Semaphore(max(1, concurrency))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:

        async def one(row: Stored) -> Sent:
            async with gate:
                sent = await _send(http, row, base_url, session, session_header, api_key, model)
            progress(sent)
            return sent

        return list(await asyncio.gather(*(one(r) for r in rows)))


async def _send(
    http: aiohttp.ClientSession,
    row: Stored,
    base_url: str,
    session: str,
    session_header: str,
    api_key: str | None,
    model: str | None,
) -> Sent:
    url = base_url.rstrip("/") + row.path
    try:
        async with http.request(
            row.method,
            url,
            data=request_body(row, model) or None,
            headers=request_headers(row, session_header, session, api_key),
        ) as resp:
            data = await resp.read()
            sent = Sent(row.id, resp.headers.get(EXCHANGE_ID_HEADER), resp.status)
            if resp.headers.get(PROXY_ERROR_HEADER):  # the target never answered: the proxy says why
                sent.error = _proxy_error(data, resp.headers[PROXY_ERROR_HEADER])
            return sent
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Sent(row.id, error=f"{type(exc).__name__}: {exc}"[:300])
