"""A lean OpenAI-compatible upstream for the benchmark: as cheap per request as aiohttp allows.

Run as its own process: ``python -m proxy.bench.upstream --port 9000``.

Each request says what it wants in headers, so one server serves every scenario:
- ``x-bench-events``: content events per stream (default 50); non-streamed replies report the same
  number of completion tokens.
- ``x-bench-event-bytes``: characters of content per event (default 4, about one token).
- ``x-bench-pace-ms``: gap between stream events (default 0: as fast as the socket takes them).
- ``x-bench-label``: the label a round's requests carry (also their X-Proxy-Session); totals per label.

Invariants:
- Every byte is prebuilt per (events, size) and cached, so the upstream spends its time on HTTP, not JSON.
- Usage accounting is exact: one content event = one completion token, ``PROMPT_TOKENS`` per request,
  and a stream's usage is counted only when the usage chunk was actually sent (``include_usage``).
  ``GET /_bench/stats`` returns the totals per label; the harness compares them with the database.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from collections import Counter

import msgspec
from aiohttp import web

from proxy.testing.fake_upstream.chat import chunk_object, completion_object
from proxy.testing.fake_upstream.common import sse

PROMPT_TOKENS = 12
MODEL = "bench-model"
IDENT = "chatcmpl-bench"
CREATED = 1700000000
FINGERPRINT = "fp_bench"
_ENC = msgspec.json.Encoder()


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _RequestView(msgspec.Struct):
    stream: bool | None = None
    stream_options: _StreamOptions | None = None


_REQUEST = msgspec.json.Decoder(_RequestView)


# Per label: "requests", "streams", "streams_without_usage" (the client did not ask for the usage chunk, so
# it was not sent) and the token sums, added from the very ``usage`` objects the replies carry.
STATS = web.AppKey("stats", dict[str, Counter[str]])


def _usage(events: int) -> dict[str, int]:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": events, "total_tokens": PROMPT_TOKENS + events}


def _chunk(choices: list[dict[str, object]], **extra: object) -> bytes:
    return sse(chunk_object(IDENT, CREATED, MODEL, choices, FINGERPRINT, **extra))


@functools.lru_cache(maxsize=256)
def completion_body(events: int, size: int) -> bytes:
    message = {"role": "assistant", "content": ("x" * size) * events}
    choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}]
    return _ENC.encode(completion_object(IDENT, CREATED, MODEL, choices, _usage(events), FINGERPRINT))


@functools.lru_cache(maxsize=64)
def stream_parts(size: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(first event, one content event, final event, [DONE]); the usage chunk is built per event count."""
    first = _chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}], usage=None)
    content = _chunk([{"index": 0, "delta": {"content": "x" * size}, "finish_reason": None}], usage=None)
    final = _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], usage=None)
    return first, content, final, b"data: [DONE]\n\n"


@functools.lru_cache(maxsize=256)
def usage_event(events: int) -> bytes:
    return _chunk([], usage=_usage(events))


def _int_header(request: web.Request, name: str, default: int) -> int:
    value = request.headers.get(name)
    return int(value) if value is not None else default


async def chat_completions(request: web.Request) -> web.StreamResponse:
    view = _REQUEST.decode(await request.read())
    events = _int_header(request, "x-bench-events", 50)
    size = _int_header(request, "x-bench-event-bytes", 4)
    pace = _int_header(request, "x-bench-pace-ms", 0) / 1000
    stats = request.app[STATS].setdefault(request.headers.get("x-bench-label", ""), Counter())
    stats["requests"] += 1
    if not view.stream:
        stats.update(_usage(events))
        return web.Response(body=completion_body(events, size), content_type="application/json")

    stats["streams"] += 1
    include_usage = bool(view.stream_options and view.stream_options.include_usage)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    first, content, final, done = stream_parts(size)
    await resp.write(first)
    for _ in range(events):
        if pace:
            await asyncio.sleep(pace)
        await resp.write(content)
    await resp.write(final)
    if include_usage:
        await resp.write(usage_event(events))
        stats.update(_usage(events))
    else:
        stats["streams_without_usage"] += 1
    await resp.write(done)
    await resp.write_eof()
    return resp


async def stats(request: web.Request) -> web.Response:
    return web.Response(
        body=_ENC.encode(request.app[STATS]),
        content_type="application/json",
    )


async def models(_request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 << 20)
    app[STATS] = {}
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/_bench/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(create_app(), host=args.host, port=args.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
