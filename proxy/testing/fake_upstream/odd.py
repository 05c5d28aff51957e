"""Chat upstreams misbehaving the ways real ones do, chosen by model (``fake-html``, ``fake-raw``, ...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.testing.fake_upstream.common import CONTROL, ENC

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def handler(model: str, body: dict[str, Any]) -> Handler | None:
    """The misbehaving answer for ``model``; None for a normal one."""

    async def html(_: web.Request) -> web.Response:
        return web.Response(status=200, text="<html><body>Welcome to nginx!</body></html>", content_type="text/html")

    async def text_error(_: web.Request) -> web.Response:
        return web.Response(status=502, text="Bad Gateway", content_type="text/plain")

    async def json_for_stream(_: web.Request) -> web.Response:
        choice = {"index": 0, "message": {"role": "assistant", "content": "not a stream"}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
        return web.json_response(
            {"id": "x", "object": "chat.completion", "model": model, "choices": [choice], "usage": usage}
        )

    async def raw_sse(request: web.Request) -> web.StreamResponse:
        # Sends `raw_sse` (latin-1 text standing for bytes) exactly, in `splits`-sized writes.
        data = str(body.get("raw_sse", "")).encode("latin-1")
        step = int(body.get("split") or 7) or 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(0, len(data), step):
            await resp.write(data[i : i + step])
        await resp.write_eof()
        return resp

    async def huge_event(request: web.Request) -> web.StreamResponse:
        content = "x" * int(body.get("event_bytes") or 1 << 20)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {
            "id": "h",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": "stop"}],
        }
        await resp.write(b"data: " + ENC.encode(chunk) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def firehose(request: web.Request) -> web.StreamResponse:
        # As fast as the connection takes it; the proxy's backpressure is what slows it down.
        control = request.app[CONTROL]
        piece = {
            "id": "f",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": "lorem ipsum dolor sit amet "}, "finish_reason": None}],
        }
        event = b"data: " + ENC.encode(piece) + b"\n\n"
        events = int(body.get("events") or 1000)
        tail = b"data: [DONE]\n\n"
        control.stream_bytes = len(event) * events + len(tail)
        control.bytes_sent = 0
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        batch = event * 64
        for _ in range(events // 64):
            await resp.write(batch)
            control.bytes_sent += len(batch)
        for _ in range(events % 64):
            await resp.write(event)
            control.bytes_sent += len(event)
        await resp.write(tail)
        control.bytes_sent += len(tail)
        await resp.write_eof()
        return resp

    handlers: dict[str, Handler] = {
        "fake-firehose": firehose,
        "fake-html": html,
        "fake-text-error": text_error,
        "fake-json-for-stream": json_for_stream,
        "fake-raw": raw_sse,
        "fake-huge-event": huge_event,
    }
    return handlers.get(model)
