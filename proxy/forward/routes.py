"""Where a request goes: the mount (upstream), the session and the path below ``/v1``, from the URL alone.

Invariants:
- The target is always a configured upstream's base URL plus the tail; nothing in the request can name
  another host.
- The tail keeps the client's percent-encoding (``tail_raw``) for forwarding, and its decoded form for
  the record and replay key.
- A path outside every mount and the admin routes gets an OpenAI-shaped 404 that says where the API is
  (a base URL without ``/v1`` is the usual mistake); it is not forwarded and not recorded.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from aiohttp import web

from proxy.config import Settings
from proxy.errors import error_response
from proxy.headers import NO_STORE_HEADER, TIMING_HEADER

SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


class Route(NamedTuple):  # made per request: a tuple is the cheapest immutable record
    upstream: str
    session: str | None
    tail_raw: str  # the path below /v1/, percent-encoding as the client sent it
    tail: str  # the same, decoded


def resolve_route(request: web.Request) -> Route:
    info = request.match_info
    session = info.get("session")
    upstream = info.get("upstream", "default")
    leading = (2 if session is not None else 0) + (1 if "upstream" in info else 0)
    parts = request.rel_url.raw_path.split("/", leading + 2)
    tail_raw = parts[-1] if len(parts) == leading + 3 else ""
    return Route(upstream, session, tail_raw, info["tail"])


def control_headers(settings: Settings) -> frozenset[str]:
    """Headers that talk to the proxy, not the upstream: never forwarded."""
    return frozenset({settings.session_header.lower(), NO_STORE_HEADER.lower(), TIMING_HEADER.lower()})


def unknown_path_handler(settings: Settings):  # type: ignore[no-untyped-def]
    """The handler of every path no route serves: a 404 the SDKs show, naming the base URLs that work."""
    named = tuple(settings.upstreams)

    async def unknown_path(request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}"
        shown = request.rel_url.raw_path[:200]  # percent-encoded: plain ASCII whatever the client sent
        mounts = "".join(f", {base}/{name}/v1" for name in named)
        message = (
            f"no API at {request.method} {shown}: this proxy serves the API under /v1; use the base URL "
            f"{base}/v1 (or {base}/s/SESSION/v1 to name a recording session{mounts})"
        )
        return error_response(404, message, "invalid_request_error", "unknown_url")

    return unknown_path
