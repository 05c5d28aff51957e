"""The upstream side: one shared client session, header filtering, URL building.

Invariants:
- One ``ClientSession`` per app (keep-alive pool), with a dummy cookie jar so one user's ``Set-Cookie``
  never rides along with another user's request, and ``auto_decompress=False`` so compressed bodies
  pass through untouched (the recorder decodes its own copy).
- The target URL is always a configured base URL + the path below ``/v1``; nothing a client sends
  (Host, absolute-form targets, X-Forwarded-*) can change the host.
- Hop-by-hop headers (RFC 9110 7.6.1) and Host never cross the proxy in either direction.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import Upstream
from proxy.headers import HOP_BY_HOP

_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length"}
_REFRAMED_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}


def client_timeout(up: Upstream) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=up.total_timeout or None,
        connect=up.connect_timeout or None,
        sock_read=up.read_timeout or None,
    )


def make_session(max_connections: int = 0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
        # The client's own User-Agent is forwarded; do not add aiohttp's.
        skip_auto_headers=("User-Agent",),
    )


def target_url(base: str, tail: str, query: str) -> str:
    """``base`` + ``/`` + ``tail`` (the path below /v1), keeping the query string as sent."""
    url = base.rstrip("/") + "/" + tail.lstrip("/")
    return f"{url}?{query}" if query else url


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    """Header names listed in ``Connection``: hop-by-hop for this hop only."""
    tokens: set[str] = set()
    for value in headers.getall("connection", []):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _drop_set(headers: CIMultiDictProxy[str], base: frozenset[str]) -> frozenset[str]:
    # The usual "Connection: keep-alive" names nothing beyond the fixed set: skip building a new one.
    if "connection" not in headers:
        return base
    tokens = _connection_tokens(headers)
    return base if tokens <= base else base | tokens


def _without(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    # Copying the multidict whole (in C) and popping the few dropped names is about 3x cheaper than
    # rebuilding it from the kept pairs.
    out = CIMultiDict(headers)
    for name in headers:
        if name.lower() in drop:
            out.popall(name, None)
    return out


def request_drop(extra: Iterable[str] = ()) -> frozenset[str]:
    """Headers never forwarded upstream: hop-by-hop, Host, Content-Length, and ``extra`` (lower-case).

    Built once per app and passed to ``forward_request_headers``, not rebuilt per request.
    """
    return _REQUEST_DROP | {name.lower() for name in extra}


def forward_request_headers(headers: CIMultiDictProxy[str], drop: frozenset[str] = _REQUEST_DROP) -> CIMultiDict[str]:
    return _without(headers, _drop_set(headers, drop))


def forward_response_headers(headers: CIMultiDictProxy[str], *, reframed: bool) -> CIMultiDict[str]:
    return _without(headers, _drop_set(headers, _REFRAMED_RESPONSE_DROP if reframed else HOP_BY_HOP))
