"""The proxy's HTTP server: aiohttp's, with a deadline for request heads and bad-request answers that quote nothing.

Invariants:
- A connection must deliver a complete request head (request line and headers) within ``header_timeout``
  seconds of opening, or of the first byte of a later request on a kept-alive connection; otherwise it
  is answered 408 and closed. aiohttp has no such limit (its keep-alive timer closes only connections
  idle since their last response), so a client trickling header bytes could hold a connection, and its
  memory, for as long as it liked (slowloris).
- A request the HTTP parser rejects (bare LF, a control byte in a header, an oversized line...) gets a
  400 in the OpenAI error shape naming the parser's reason, and one log line with the same reason: never
  the offending bytes, which aiohttp's own answer and ERROR log quote, credentials included.
- The access log (``access_log = true``) prints request lines with credential query parameters redacted.
- ``serve`` runs the app until SIGINT or SIGTERM, then shuts down as ``web.run_app`` does: stop
  accepting, give in-flight requests ``shutdown_timeout`` seconds, run the app's cleanup (the recorder
  drains its queue).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import BadHttpMethod
from aiohttp.web_protocol import RequestHandler

from proxy.apis.errors import openai_error_body
from proxy.errors import error_response
from proxy.forward.state import SETTINGS
from proxy.record.redact import Redactor

log = logging.getLogger("proxy.forward.server")
# aiohttp's parser messages put the offending bytes after the reason, quoted (b'...') and pointed at (^).
_QUOTED = re.compile(r"""b?['"]|\^""")
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"


def parser_reason(exc: BaseException | None) -> str:
    """What the parser objected to, without the bytes it quotes: 'Bad status line: Expected CRLF after version'."""
    if exc is None:
        return "malformed request"
    message = str(getattr(exc, "message", "") or "")
    head = _QUOTED.split(message, maxsplit=1)[0]
    return " ".join(head.split()).rstrip(":")[:200] or type(exc).__name__


class ProxyProtocol(RequestHandler):
    """aiohttp's connection handler, plus the request-head deadline and bad-request answers described above."""

    __slots__ = ("_head_deadline", "_header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:
            self._disarm()  # a whole head arrived (or the parser rejected it: answered either way)
        elif data and self._head_deadline is None and self._between_requests():
            self._arm()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        if self._header_timeout > 0:
            self._head_deadline = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        transport = self.transport
        if transport is None or self._force_close or self._request_in_progress:
            return
        peer = transport.get_extra_info("peername")
        log.info("closing a connection from %s: no complete request head within %g s", peer, self._header_timeout)
        body = openai_error_body(
            408,
            f"request line and headers not received within {self._header_timeout:g} s",
            "invalid_request_error",
            "request_timeout",
        )
        transport.write(_TIMED_OUT + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.force_close()

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)  # the app's own failure: a traceback
        reason = parser_reason(exc)
        # Like aiohttp: a bad method on a connection's first request is usually not HTTP at all (a scanner).
        level = logging.DEBUG if self._request_count == 1 and isinstance(exc, BadHttpMethod) else logging.INFO
        log.log(level, "malformed request from %s: %s", request.remote, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot answer the malformed request")
        response = error_response(400, f"malformed HTTP request: {reason}", "invalid_request_error", "bad_request")
        response.force_close()
        return response


class ProxyServer(web.Server):
    """aiohttp's low-level server, whose connections are ``ProxyProtocol``s."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return ProxyProtocol(self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs)


def access_log_class(redactor: Redactor) -> type[AbstractAccessLogger]:
    """An access logger in aiohttp's default layout whose URLs and headers pass through ``redactor``."""

    class AccessLog(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            text = redactor.text
            self.logger.info(
                '%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s" "%s"',
                request.remote,
                request.method,
                text(request.path_qs),
                request.version.major,
                request.version.minor,
                response.status,
                response.body_length,
                time,
                text(request.headers.get("Referer", "-")),
                text(request.headers.get("User-Agent", "-")),
            )

    return AccessLog


class ProxyRunner(web.AppRunner):
    """aiohttp's ``AppRunner`` for the proxy app: its connections are ``ProxyProtocol``s, its access log redacted."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        settings = app[SETTINGS]
        kwargs.setdefault("access_log_class", access_log_class(Redactor.from_settings(settings)))
        super().__init__(app, **kwargs)
        self._header_timeout = settings.header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app and merges its handler_args, as aiohttp does
        return ProxyServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            header_timeout=self._header_timeout,
            **plain._kwargs,
        )


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool = False,
    access_log: logging.Logger | None = None,
    shutdown_timeout: float = 30.0,
) -> None:
    """Serve ``app`` on host:port until SIGINT or SIGTERM, then shut down gracefully."""
    runner = ProxyRunner(
        app,
        access_log=access_log,
        # Cancel a handler as soon as its client disconnects, so upstream streams stop at once.
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=75.0,  # web.run_app's default (a bare RequestHandler would wait an hour)
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        await stop.wait()
    finally:
        await runner.cleanup()
