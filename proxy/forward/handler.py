"""The request handler: one request in, one Exchange out, forwarded and teed, or answered from recordings.

Invariants:
- Every request under a ``/v1/`` mount produces exactly one Exchange, submitted to the recorder exactly
  once in a ``finally`` (so cancelled and failed requests are recorded too), unless the mode records
  nothing or the answer came from recordings (``proxy.replay.playback``; replay and auto modes).
- The client never waits on the database: the handler only calls ``Recorder.submit``.
- Status, headers and body of upstream responses reach the client unchanged (less hop-by-hop headers),
  plus ``X-Proxy-Exchange-Id`` when the exchange is recorded. Errors the proxy makes itself use the
  OpenAI error shape.
- What the mode allows (forward, replay, record) is asked of ``Mode``; nothing here compares modes.
- The handler records facts (``ending``, ``delivered``); the outcome is decided in ``record.outcome``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from proxy.apis.families import family_for
from proxy.apis.family import Family, RequestInfo
from proxy.config import Upstream
from proxy.errors import error_response
from proxy.forward.relay import relay_body
from proxy.forward.routes import SESSION_ID, Route, resolve_route
from proxy.forward.state import STATE, ProxyState
from proxy.forward.tee import Passage, copy_body
from proxy.forward.upstream import forward_request_headers, forward_response_headers
from proxy.headers import EXCHANGE_ID_HEADER, NO_STORE_HEADER, REPLAY_HEADER
from proxy.record.decode import is_event_stream
from proxy.record.exchange import Ending, Exchange
from proxy.record.redact import api_key_of, fingerprint, redact_headers
from proxy.record.tap import BodyTap

log = logging.getLogger("proxy.forward")
# Non-streamed bodies up to this size are read whole and answered with one write.
BUFFER_LIMIT = 8 << 20
# An answer refusing the usage option is small; a larger one is never read to find out.
REFUSAL_MAX_BYTES = 64 << 10


class Rejected(Exception):
    """The proxy refuses the request itself; raised by a step, answered by ``forward``."""

    def __init__(
        self, status: int, message: str, code: str, type_: str = "invalid_request_error", *, close: bool = False
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_
        self.close = close  # the connection is closed after the answer, not kept for a next request

    def respond(self, ex: Exchange, recorded: bool, family: Family) -> web.Response:
        ex.status = self.status
        ex.finish(Ending.REJECTED, self.message)
        # The id names a record only in a mode that records (passthrough makes none).
        exchange_id = ex.id if recorded else None
        response = error_response(self.status, self.message, self.type, self.code, exchange_id, family)
        if self.close:
            response.force_close()
        return response


async def forward(request: web.Request) -> web.StreamResponse:
    """The handler of every ``/v1/`` route: the steps below, in order, and the record submitted once."""
    st = request.app[STATE]
    route = resolve_route(request)
    # The raw query, as forwarded; a credential in it is kept only as a fingerprint (``_forward_upstream``).
    query, query_key = st.redactor.query(request.rel_url.raw_query_string)
    ex = Exchange(
        method=request.method,
        path="/v1/" + route.tail,
        query=query,
        upstream=route.upstream,
        request_headers=redact_headers(request.headers, st.redact),
        store_bodies=st.settings.recorder.store_bodies,
    )
    family = family_for(ex.method, ex.path)  # from the request line alone: even a refusal speaks its shape
    try:
        try:
            _identify(request, st, route, ex)
            upstream = _mount(st, route)
            body = await _read_body(request, st, ex)
        except Rejected as rejected:
            return rejected.respond(ex, st.settings.mode.records, family)
        info = _read_request(family, ex, body)
        if st.playback is not None:
            answered = await st.playback.answer(request, ex, family, info.wants_usage)
            if answered is not None:
                return answered
        # Playback answers every request of a mode that does not forward, so only those reach here.
        assert upstream is not None
        body = _upstream_body(st, route, family, ex, info)
        return await _forward_upstream(request, st, route, upstream, family, ex, body, query_key)
    except asyncio.CancelledError:
        ex.finish(Ending.CLIENT_LEFT, "client disconnected")
        raise
    finally:
        ex.finish()
        if st.settings.mode.records and not ex.replayed:
            st.recorder.submit(ex)
        else:
            ex.body_tap = None  # breaks the exchange-tap cycle (``Recorder._hand``)


def _mount(st: ProxyState, route: Route) -> Upstream | None:
    """The upstream this mount forwards to; None in a mode that never forwards (any mount replays)."""
    upstream = st.upstreams.get(route.upstream)
    if st.settings.mode.forwards and (upstream is None or not upstream.url):
        raise Rejected(404, f"unknown upstream {route.upstream!r}", "unknown_upstream")
    if "." in route.tail and any(seg in ("..", ".") for seg in route.tail.split("/")):
        raise Rejected(400, "path must not contain '.' or '..' segments", "invalid_path")
    return upstream if st.settings.mode.forwards else None


def _identify(request: web.Request, st: ProxyState, route: Route, ex: Exchange) -> None:
    """The recording session, and whether bodies may be stored."""
    session_id = route.session or request.headers.get(st.settings.session_header)
    if session_id is not None:
        if not SESSION_ID.match(session_id):
            raise Rejected(400, "invalid session id (1-128 of A-Z a-z 0-9 _ . : @ -)", "invalid_session_id")
        ex.session_id = session_id
    if request.headers.get(NO_STORE_HEADER, "").lower() in ("1", "true", "yes"):
        ex.store_bodies = False


async def _read_body(request: web.Request, st: ProxyState, ex: Exchange) -> bytes:
    limit, deadline = st.settings.max_body_bytes, st.settings.body_timeout
    declared = request.content_length
    try:
        if declared is not None and declared > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
        if request.content.is_eof():
            # The whole body came with the head (any small body does): nothing to wait for, no timer to arm.
            body = await request.read()
        else:
            async with asyncio.timeout(deadline or None):
                body = await request.read()
    except TimeoutError:
        # A client trickling its body (or stopping halfway) must not hold a connection and a handler forever.
        # The rest of the body may never come, so the connection cannot serve a next request.
        message = f"request body not received within {deadline:g} s"
        raise Rejected(408, message, "request_timeout", close=True) from None
    except web.HTTPRequestEntityTooLarge:
        # Answered before reading the rest of the body; aiohttp then closes the connection.
        raise Rejected(
            413, f"request body larger than the proxy's limit of {limit} bytes", "request_too_large"
        ) from None
    ex.request_body = body
    return body


def _read_request(family: Family, ex: Exchange, body: bytes) -> RequestInfo:
    """What the family reads of the body; a body it cannot read is forwarded for the upstream to judge."""
    ex.api = family.name
    info = family.read_request(body)
    if info is None:
        return RequestInfo()
    ex.requested_model, ex.user, ex.stream = info.model, info.user, info.stream
    return info


def _upstream_body(st: ProxyState, route: Route, family: Family, ex: Exchange, info: RequestInfo) -> bytes:
    """The body sent upstream: the client's, with the family's usage option where the proxy asks for usage."""
    if st.settings.inject_stream_usage and route.upstream not in st.no_usage_option:
        injected = family.usage_option(ex.request_body, info)
        if injected is not None:
            ex.usage_injected = True
            return injected
    return ex.request_body


async def _forward_upstream(
    request: web.Request,
    st: ProxyState,
    route: Route,
    upstream: Upstream,
    family: Family,
    ex: Exchange,
    body: bytes,
    query_key: str | None = None,
) -> web.StreamResponse:
    headers = forward_request_headers(request.headers, st.request_drop)
    key = api_key_of(request.headers)
    if key is None and upstream.api_key:
        key = upstream.api_key
        headers["Authorization"] = f"Bearer {key}"
    key = key or query_key
    if key is not None:
        ex.key_fingerprint = fingerprint(st.secret, key)
    if ex.stream:
        # Compressed SSE would be buffered by the compressor and could not be teed event by event.
        headers["Accept-Encoding"] = "identity"
    raw_url = upstream.url.rstrip("/") + "/" + route.tail_raw
    if request.rel_url.raw_query_string:
        raw_url += "?" + request.rel_url.raw_query_string
    url = URL(raw_url, encoded=True)

    def send(data: bytes) -> Any:
        return st.session.request(
            request.method,
            url,
            data=data if data else None,
            headers=headers,
            timeout=st.timeouts[route.upstream],
            allow_redirects=False,
        )

    try:
        async with send(body) as up:
            if not (ex.usage_injected and await _refuses_usage_option(up, family)):
                return await _respond(request, up, family, ex, st)
        # The upstream refused the option the proxy added, not the client's request: ask again exactly as
        # the client asked (the stream is then recorded without usage) and stop adding it on this mount.
        st.no_usage_option.add(route.upstream)
        log.warning("upstream %r refuses stream_options; usage is no longer requested from it", route.upstream)
        ex.usage_injected = False
        async with send(ex.request_body) as up:
            return await _respond(request, up, family, ex, st)
    except TimeoutError:
        return _upstream_error(st, ex, family, 504, Ending.UPSTREAM_TIMEOUT, upstream, "timed out")
    except aiohttp.ClientError as exc:
        # aiohttp's message may quote the full URL, query credentials and all; the client and the record
        # get it redacted.
        detail = st.redactor.text(f"{type(exc).__name__}: {exc}") or ""
        return _upstream_error(st, ex, family, 502, Ending.UPSTREAM_UNREACHABLE, upstream, detail)


def _proxy_headers(st: ProxyState, ex: Exchange) -> dict[str, str]:
    """The headers the proxy adds to a forwarded answer: the record's id, and in auto mode that it was recorded."""
    headers = {}
    if st.settings.mode.records:
        headers[EXCHANGE_ID_HEADER] = ex.id
    if st.settings.mode.replays:
        headers[REPLAY_HEADER] = "recorded"
    return headers


async def _respond(
    request: web.Request, up: aiohttp.ClientResponse, family: Family, ex: Exchange, st: ProxyState
) -> web.StreamResponse:
    ex.status = ex.upstream_status = up.status
    ex.response_headers = redact_headers(up.headers, st.redact)
    sse = is_event_stream(ex.response_headers)
    ex.stream = ex.stream or sse
    usage_filter = family.hiding_filter(st.settings.max_event_bytes) if ex.usage_injected and sse else None
    whole = not sse and up.content_length is not None and up.content_length <= BUFFER_LIMIT
    # An encoded stream whose usage chunk must be hidden reaches the client decoded: see forward.tee.
    tap = ex.body_tap = BodyTap(
        ex,
        cap=st.settings.max_record_bytes,
        event_limit=st.settings.max_record_bytes,
        events=sse,
        forward_decoded=usage_filter is not None,
        marks=not whole,  # a body read whole has no read timing worth replaying
    )
    out_headers = forward_response_headers(up.headers, reframed=True)
    out_headers.update(_proxy_headers(st, ex))
    if whole:
        data = await up.read()
        tap.feed(data)  # decoded, if at all, in the writer
        return web.Response(status=up.status, reason=up.reason, headers=out_headers, body=data)
    if tap.out is not None:
        out_headers.popall("Content-Encoding", None)
    response = web.StreamResponse(status=up.status, reason=up.reason, headers=out_headers)
    if up.content_length is not None and tap.out is None and usage_filter is None:
        # A filtered stream may send fewer bytes than the upstream declared (the hidden chunk): chunked then.
        response.content_length = up.content_length
    await response.prepare(request)
    # The relay forwards bytes as sent, so a stream the client must get decoded goes through the tee.
    relay = st.settings.server.relay and tap.out is None
    passage = Passage(request, up, response, ex, tap, usage_filter)
    if not (relay and await relay_body(passage)):
        await copy_body(passage)
    return response


async def _refuses_usage_option(up: aiohttp.ClientResponse, family: Family) -> bool:
    """Whether the upstream refused the usage option; reads only a small body of a declared length.

    ``read`` keeps the body, so ``_respond`` can still pass it on when this was some other complaint.
    """
    if up.status < 400 or up.content_length is None or up.content_length > REFUSAL_MAX_BYTES:
        return False
    try:
        return family.refuses_option(up.status, await up.read())
    except aiohttp.ClientError:
        return False


def _upstream_error(
    st: ProxyState, ex: Exchange, family: Family, status: int, ending: Ending, upstream: Upstream, detail: str
) -> web.Response:
    name = ex.upstream
    host = URL(upstream.url).with_user(None).with_password(None)
    if status == 504:
        message, code = f"upstream {name!r} ({host}) timed out", "upstream_timeout"
    else:
        message, code = f"upstream {name!r} ({host}) unreachable: {detail}", "upstream_unreachable"
    ex.status = status
    ex.finish(ending, message[:500])
    response = error_response(status, message, "proxy_error", code, family=family)
    response.headers.update(_proxy_headers(st, ex))
    ex.response_body = bytes(response.body)  # type: ignore[arg-type]
    ex.response_headers = {"content-type": "application/json"}
    return response
