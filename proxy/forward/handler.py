"""The request handler: one request in, one Exchange out, forwarded and teed, or answered from recordings.

Invariants:
- Every request under a ``/v1/`` mount produces exactly one Exchange, submitted to the recorder exactly
  once in a ``finally`` (so cancelled and failed requests are recorded too), unless the mode records
  nothing or the answer came from recordings (``proxy.replay.playback``; replay and auto modes).
- The client never waits on the database: the handler only calls ``Recorder.submit``.
- Status, headers and body of upstream responses reach the client unchanged (less hop-by-hop headers),
  plus ``X-Proxy-Exchange-Id``. Errors the proxy makes itself use the OpenAI error shape.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from proxy.apis.chat.usage_option import USAGE_PATHS, UsageChunkFilter, inject_usage
from proxy.apis.chat.wire import REQUEST_DECODER, RequestView
from proxy.apis.codec import DECODE_ERRORS
from proxy.config import Mode, Upstream
from proxy.errors import error_response
from proxy.forward.routes import SESSION_ID, Route, resolve_route
from proxy.forward.state import STATE, ProxyState
from proxy.forward.tee import copy_body
from proxy.forward.upstream import forward_request_headers, forward_response_headers
from proxy.headers import EXCHANGE_ID_HEADER, NO_STORE_HEADER, REPLAY_HEADER
from proxy.record.decode import is_event_stream
from proxy.record.exchange import Exchange, Outcome
from proxy.record.redact import api_key_of, fingerprint, redact_headers

log = logging.getLogger("proxy.forward")
# Non-streamed bodies up to this size are read whole and answered with one write.
BUFFER_LIMIT = 8 << 20


def _request_view(body: bytes) -> RequestView | None:
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        return REQUEST_DECODER.decode(body)
    except DECODE_ERRORS:
        return None  # not ours to judge: the upstream answers malformed JSON itself


def _bad_request(ex: Exchange, status: int, message: str, type_: str, code: str) -> web.Response:
    ex.status = status
    ex.finish(Outcome.REJECTED, message)
    return error_response(status, message, type_, code, ex.id)


async def forward(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    settings = st.settings
    route = resolve_route(request)
    ex = Exchange(
        method=request.method,
        path="/v1/" + route.tail,
        query=request.query_string,
        upstream=route.upstream,
        request_headers=redact_headers(request.headers, st.redact),
        store_bodies=settings.recorder.store_bodies,
    )
    record = settings.mode in (Mode.RECORD, Mode.AUTO)
    try:
        return await _forward(request, st, route, ex)
    except asyncio.CancelledError:
        ex.status = ex.status if ex.finished_at else 499
        ex.finish(Outcome.CLIENT_DISCONNECTED, "client disconnected")
        raise
    finally:
        ex.finish()
        if record and not ex.replayed:
            st.recorder.submit(ex)


async def _forward(request: web.Request, st: ProxyState, route: Route, ex: Exchange) -> web.StreamResponse:
    settings = st.settings
    session_id = route.session or request.headers.get(settings.session_header)
    if session_id is not None:
        if not SESSION_ID.match(session_id):
            return _bad_request(
                ex,
                400,
                "invalid session id (1-128 of A-Z a-z 0-9 _ . : @ -)",
                "invalid_request_error",
                "invalid_session_id",
            )
        ex.session_id = session_id
    upstream = st.upstreams.get(route.upstream)
    # Replay mode serves any mount from recordings, configured or not.
    if settings.mode is not Mode.REPLAY and (upstream is None or not upstream.url):
        return _bad_request(
            ex, 404, f"unknown upstream {route.upstream!r}", "invalid_request_error", "unknown_upstream"
        )
    if any(seg in ("..", ".") for seg in route.tail.split("/")):
        return _bad_request(
            ex, 400, "path must not contain '.' or '..' segments", "invalid_request_error", "invalid_path"
        )

    if request.headers.get(NO_STORE_HEADER, "").lower() in ("1", "true", "yes"):
        ex.store_bodies = False

    declared = request.content_length
    try:
        if declared is not None and declared > settings.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=settings.max_body_bytes, actual_size=declared)
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        # Answered before reading the rest of the body; aiohttp then closes the connection.
        return _bad_request(
            ex,
            413,
            f"request body larger than the proxy's limit of {settings.max_body_bytes} bytes",
            "invalid_request_error",
            "request_too_large",
        )
    ex.request_body = body
    view = _request_view(body)
    if view is not None:
        ex.requested_model = view.model
        ex.user = view.user
        ex.stream = bool(view.stream)
        if (
            ex.stream
            and settings.inject_stream_usage
            and route.upstream not in st.no_usage_option
            and not (view.stream_options and view.stream_options.include_usage)
            and ex.path.endswith(USAGE_PATHS)
        ):
            injected = inject_usage(body)
            if injected is not None:
                body = injected
                ex.usage_injected = True
    if st.playback is not None:
        wants_usage = bool(view and view.stream_options and view.stream_options.include_usage)
        replayed = await st.playback.answer(request, ex, ex.request_body, wants_usage)
        if replayed is not None:
            return replayed
    assert upstream is not None  # replay mode (the only one without an upstream) always answered above

    headers = forward_request_headers(request.headers, st.request_drop)
    key = api_key_of(request.headers)
    if key is None and upstream.api_key:
        key = upstream.api_key
        headers["Authorization"] = f"Bearer {key}"
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
            if not (ex.usage_injected and await _refuses_usage_option(up)):
                return await _respond(request, up, ex, st)
        # The upstream refused the option the proxy added, not the client's request: ask again exactly as
        # the client asked (the stream is then recorded without usage) and stop adding it on this mount.
        st.no_usage_option.add(route.upstream)
        log.warning("upstream %r refuses stream_options; usage is no longer requested from it", route.upstream)
        ex.usage_injected = False
        async with send(ex.request_body) as up:
            return await _respond(request, up, ex, st)
    except TimeoutError:
        return _upstream_error(ex, 504, Outcome.UPSTREAM_TIMEOUT, route.upstream, upstream, "timed out")
    except aiohttp.ClientError as exc:
        return _upstream_error(
            ex, 502, Outcome.UPSTREAM_UNREACHABLE, route.upstream, upstream, f"{type(exc).__name__}: {exc}"
        )


async def _respond(
    request: web.Request, up: aiohttp.ClientResponse, ex: Exchange, st: ProxyState
) -> web.StreamResponse:
    ex.status = ex.upstream_status = up.status
    ex.response_headers = redact_headers(up.headers, st.redact)
    sse = is_event_stream(ex.response_headers)
    ex.stream = ex.stream or sse
    out_headers = forward_response_headers(up.headers, reframed=True)
    out_headers[EXCHANGE_ID_HEADER] = ex.id
    if st.playback is not None:
        out_headers[REPLAY_HEADER] = "recorded"
    if not sse and up.content_length is not None and up.content_length <= BUFFER_LIMIT:
        data = await up.read()
        ex.first_byte_ms = ex.elapsed_ms()
        ex.response_body = data
        return web.Response(status=up.status, reason=up.reason, headers=out_headers, body=data)
    response = web.StreamResponse(status=up.status, reason=up.reason, headers=out_headers)
    if up.content_length is not None:
        response.content_length = up.content_length
    await response.prepare(request)
    usage_filter = UsageChunkFilter(st.settings.max_event_bytes) if ex.usage_injected and sse else None
    await copy_body(request, up, response, ex, usage_filter)
    return response


async def _refuses_usage_option(up: aiohttp.ClientResponse) -> bool:
    """A small 400/422 answer naming ``stream_options``: the upstream does not accept the field.

    The body is only read when its length is declared and small; ``read`` keeps it, so ``_respond`` can
    still pass it on when this was some other complaint.
    """
    if up.status not in (400, 422) or up.content_length is None or up.content_length > 64 << 10:
        return False
    try:
        return b"stream_options" in await up.read()
    except aiohttp.ClientError:
        return False


def _upstream_error(
    ex: Exchange, status: int, outcome: Outcome, name: str, upstream: Upstream, detail: str
) -> web.Response:
    host = URL(upstream.url).with_user(None).with_password(None)
    if status == 504:
        message, code = f"upstream {name!r} ({host}) timed out", "upstream_timeout"
    else:
        message, code = f"upstream {name!r} ({host}) unreachable: {detail}", "upstream_unreachable"
    ex.status = status
    ex.finish(outcome, message[:500])
    response = error_response(status, message, "proxy_error", code, ex.id)
    ex.response_body = bytes(response.body)  # type: ignore[arg-type]
    ex.response_headers = {"content-type": "application/json"}
    return response
