"""Chat upstreams misbehaving the ways real ones do, chosen by model (``fake-html``, ``fake-raw``, ...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import web

from proxy.testing.fake_upstream.common import CONTROL, ENC

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# An answer of this module: the request, the model it asked for and its JSON body.
OddAnswer = Callable[[web.Request, str, dict[str, Any]], Awaitable[web.StreamResponse]]


async def _html(request: web.Request, model: str, body: dict[str, Any]) -> web.StreamResponse:
    return web.Response(status=200, text="<html><body>Welcome to nginx!</body></html>", content_type="text/html")


async def _text_error(request: web.Request, model: str, body: dict[str, Any]) -> web.StreamResponse:
    return web.Response(status=502, text="Bad Gateway", content_type="text/plain")


async def _json_for_stream(request: web.Request, model: str, body: dict[str, Any]) -> web.StreamResponse:
    choice = {"index": 0, "message": {"role": "assistant", "content": "not a stream"}, "finish_reason": "stop"}
    usage = {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    completion = {"id": "x", "object": "chat.completion", "model": model, "choices": [choice], "usage": usage}
    return web.json_response(completion)


async def _event_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    return resp


async def _raw_sse(request: web.Request, model: str, body: dict[str, Any]) -> web.StreamResponse:
    # Sends `raw_sse` (latin-1 text standing for bytes) exactly, in `splits`-sized writes.
    data = str(body.get("raw_sse", "")).encode("latin-1")
    step = int(body.get("split") or 7) or 1
    resp = await _event_stream(request)
    for i in range(0, len(data), step):
        await resp.write(data[i : i + step])
    await resp.write_eof()
    return resp


def _chunk_event(ident: str, model: str, content: str, finish_reason: str | None) -> bytes:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}
    chunk = {"id": ident, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [choice]}
    return b"data: " + ENC.encode(chunk) + b"\n\n"


async def _huge_event(request: web.Request, model: str, body: dict[str, Any]) -> web.StreamResponse:
    content = "x" * int(body.get("event_bytes") or 1 << 20)
    resp = await _event_stream(request)
    await resp.write(_chunk_event("h", model, content, "stop"))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def _firehose(request: web.Request, model: str, body: dict[str, Any]) -> web.StreamResponse:
    # As fast as the connection takes it; the proxy's backpressure is what slows it down.
    control = request.app[CONTROL]
    event = _chunk_event("f", model, "lorem ipsum dolor sit amet ", None)
    events = int(body.get("events") or 1000)
    tail = b"data: [DONE]\n\n"
    control.stream_bytes = len(event) * events + len(tail)
    control.bytes_sent = 0
    resp = await _event_stream(request)
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


_ANSWERS: dict[str, OddAnswer] = {
    "fake-firehose": _firehose,
    "fake-html": _html,
    "fake-text-error": _text_error,
    "fake-json-for-stream": _json_for_stream,
    "fake-raw": _raw_sse,
    "fake-huge-event": _huge_event,
}


def handler(model: str, body: dict[str, Any]) -> Handler | None:
    """The misbehaving answer for ``model``; None for a normal one."""
    answer = _ANSWERS.get(model)
    return partial(answer, model=model, body=body) if answer is not None else None
