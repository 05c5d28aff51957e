"""A small OpenAI-compatible upstream that streams like OpenAI, OpenRouter and vLLM do.

Used by the tests and the benchmark; also handy for demos (``python -m proxy.testing.fake_upstream --port 9000``).
Behaviour is chosen by the request's ``model`` (so the real ``openai`` SDK can drive every case):

- any other model: a reply that echoes the last user message word by word, usage from word counts.
- ``fake-tools``: a tool call whose JSON arguments arrive in pieces.
- ``fake-openrouter``: ``: OPENROUTER PROCESSING`` comments, CRLF line ends, usage (with ``cost``) on the
  last content chunk, float ``created``.
- ``fake-reasoning``: reasoning deltas and ``reasoning_tokens``/``cached_tokens`` in usage.
- ``fake-error-midstream``: a few chunks, then an OpenRouter-style ``error`` event (HTTP 200).
- ``fake-cut``: a few chunks, then the connection is dropped without ``[DONE]``.
- ``fake-error-401`` / ``-429`` / ``-500``: that status, an OpenAI error body, ``x-request-id`` and
  rate-limit headers.
- ``fake-no-usage``: a stream that never reports usage, even when asked.
- ``fake-html`` (200 HTML), ``fake-text-error`` (502 text/plain), ``fake-json-for-stream`` (JSON even
  when a stream was asked for), ``fake-huge-event`` (one event of ``event_bytes``), ``fake-raw`` (sends
  the request's ``raw_sse`` string as latin-1 bytes in ``split``-sized writes).
- a body that is not JSON gets OpenAI's 400 ``invalid_request_error``.

``app[CONTROL]`` (or ``--reply-prefix``) makes a second upstream answer differently.

Request headers: ``x-fake-delay-ms`` paces chunks; ``x-fake-eof-delay-ms`` waits that long after a
stream's last event before ending its body; ``x-fake-gzip: 1`` gzips a non-streamed body;
``x-fake-events`` sets the number of content chunks. ``app[CONTROL].gate``, when set to an
``asyncio.Event``, holds every stream after its first chunk until the event is set (the tee timing test).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web


@dataclass
class Control:
    """Knobs a test turns while the server runs (app state itself is frozen once started)."""

    # When set, every stream waits after its first chunk until the event is set.
    gate: asyncio.Event | None = None
    # Progress of the last `fake-firehose` stream: bytes planned and bytes handed to the socket so far.
    stream_bytes: int = 0
    bytes_sent: int = 0
    # A second upstream that answers differently (replay re-send tests): text put before every reply,
    # and the JSON arguments of the fake tool call.
    reply_prefix: str = ""
    tool_arguments: str = '{"city": "Paris", "unit": "celsius"}'


REQUESTS = web.AppKey("requests", list)
CONTROL = web.AppKey("control", Control)
_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder()


def _words(messages: Any) -> list[str]:
    words: list[str] = []
    for message in messages or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words.extend(content.split())
    return words


def _last_user_text(messages: Any) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


def _usage(model: str, prompt: int, completion: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    if model == "fake-reasoning":
        usage["prompt_tokens_details"]["cached_tokens"] = prompt // 2
        usage["completion_tokens_details"]["reasoning_tokens"] = 3
    if model == "fake-openrouter":
        usage["cost"] = round((prompt * 1 + completion * 2) / 1_000_000, 9)
    return usage


def reply_pieces(body: dict[str, Any], events: int | None, prefix: str = "") -> list[str]:
    text = _last_user_text(body.get("messages")) or "nothing"
    pieces = [f"{w} " for w in f"{prefix}Echo: {text}".split()]
    if events is not None:
        pieces = (pieces * (events // max(len(pieces), 1) + 1))[:events]
    return pieces


def _error(status: int) -> web.Response:
    kinds = {401: "invalid_api_key", 429: "rate_limit_exceeded", 500: "server_error"}
    body = {"error": {"message": f"fake upstream error {status}", "type": kinds[status], "code": kinds[status]}}
    headers = {"x-request-id": f"req_fake_{status}", "x-ratelimit-remaining-requests": "0"}
    if status == 429:
        headers["retry-after"] = "0"
    return web.json_response(body, status=status, headers=headers)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    try:
        body = _DEC.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        body = None
    request.app[REQUESTS].append({"headers": dict(request.headers), "body": body, "raw": raw, "path": request.path})
    if not isinstance(body, dict) or not isinstance(body.get("model", ""), str):
        # What OpenAI answers to a body it cannot parse or validate.
        err = {
            "error": {
                "message": "We could not parse the JSON body of your request.",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        return web.json_response(err, status=400)
    model = str(body.get("model", "fake-model"))
    status = model.removeprefix("fake-error-")
    if model.startswith("fake-error-") and status.isdigit():
        return _error(int(status))
    if model == "fake-strict" and "stream_options" in body:
        # Servers that validate strictly (older vLLM, some gateways) refuse the field outright.
        error = {"message": "stream_options: Extra inputs are not permitted", "type": "BadRequestError", "code": 400}
        return web.json_response({"object": "error", **error, "error": error}, status=400)
    odd = _odd_responses(model, body)
    if odd is not None:
        return await odd(request)
    n = int(body.get("n") or 1)
    events = int(request.headers["x-fake-events"]) if "x-fake-events" in request.headers else None
    control = request.app[CONTROL]
    pieces = reply_pieces(body, events, control.reply_prefix)
    prompt_tokens = len(_words(body.get("messages")))
    usage = _usage(model, prompt_tokens, len(pieces) * n)
    created = int(time.time())
    ident = f"chatcmpl-fake{created}-{len(request.app[REQUESTS])}"  # unique: repeated prompts differ
    tools = model == "fake-tools"
    if not body.get("stream"):
        if "x-fake-delay-ms" in request.headers:
            await asyncio.sleep(float(request.headers["x-fake-delay-ms"]) / 1000)
        choices = []
        for i in range(n):
            message: dict[str, Any] = {"role": "assistant", "content": None if tools else "".join(pieces)}
            if tools:
                message["tool_calls"] = [_tool_call_full(control.tool_arguments)]
            choices.append(
                {"index": i, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tools else "stop"}
            )
        payload = {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            "usage": usage,
        }
        data = _ENC.encode(payload)
        headers = {"x-request-id": "req_fake_ok"}
        if request.headers.get("x-fake-gzip") == "1":
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=data, content_type="application/json", headers=headers)
    return await _stream(request, body, model, pieces, n, usage, ident, created)


def _tool_call_full(arguments: str) -> dict[str, Any]:
    return {"id": "call_fake1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


async def _stream(
    request: web.Request,
    body: dict[str, Any],
    model: str,
    pieces: list[str],
    n: int,
    usage: dict[str, Any],
    ident: str,
    created: int,
) -> web.StreamResponse:
    openrouter = model == "fake-openrouter"
    eol = "\r\n" if openrouter else "\n"
    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and model != "fake-no-usage"
    delay = float(request.headers.get("x-fake-delay-ms", "0")) / 1000
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "x-request-id": "req_fake_stream"}
    )
    await resp.prepare(request)
    gate = request.app[CONTROL].gate

    def chunk(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created + 0.5 if openrouter else created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if openrouter:
            obj["provider"] = "FakeProvider"
        elif include_usage:
            obj["usage"] = None
        if extra:
            obj.update(extra)
        return f"data: {_ENC.encode(obj).decode()}{eol}{eol}".encode()

    if openrouter:
        await resp.write(f": OPENROUTER PROCESSING{eol}{eol}".encode())
    out: list[bytes] = [
        chunk(
            [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                for i in range(n)
            ]
        )
    ]
    if model == "fake-tools":
        call = _tool_call_full(request.app[CONTROL].tool_arguments)
        args = call["function"]["arguments"]
        out.append(
            chunk(
                [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ]
            )
        )
        for j in range(0, len(args), 7):
            out.append(
                chunk(
                    [
                        {
                            "index": 0,
                            "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args[j : j + 7]}}]},
                            "finish_reason": None,
                        }
                    ]
                )
            )
        finish = "tool_calls"
    else:
        for piece in pieces:
            for i in range(n):
                delta: dict[str, Any] = {"content": piece}
                if model == "fake-reasoning":
                    delta["reasoning_content"] = "think "
                out.append(chunk([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}]))
        finish = "stop"
    if model == "fake-error-midstream":
        out = out[:3]
        out.append(
            chunk(
                [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
                {"error": {"code": 502, "message": "provider overloaded mid-generation"}},
            )
        )
    elif model == "fake-cut":
        out = out[:3]
    else:
        last = [{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish} for i in range(n)]
        if openrouter:
            out.append(chunk(last, {"usage": usage}))
        else:
            out.append(chunk(last))
            if include_usage:
                out.append(chunk([], {"usage": usage}))
        out.append(f"data: [DONE]{eol}{eol}".encode())

    for k, data in enumerate(out):
        if k == 1 and gate is not None:
            await gate.wait()
        if delay and k:
            await asyncio.sleep(delay)
        if openrouter and k == len(out) // 2:
            await resp.write(f": OPENROUTER PROCESSING{eol}{eol}".encode())
        await resp.write(data)
    if model == "fake-cut":
        assert request.transport is not None
        request.transport.abort()
        return resp
    if "x-fake-eof-delay-ms" in request.headers:
        await asyncio.sleep(float(request.headers["x-fake-eof-delay-ms"]) / 1000)
    await resp.write_eof()
    return resp


def _odd_responses(model: str, body: dict[str, Any]) -> Any:
    """Upstreams misbehaving the ways real ones do; None for a normal answer."""

    async def html(_: web.Request) -> web.Response:
        return web.Response(status=200, text="<html><body>Welcome to nginx!</body></html>", content_type="text/html")

    async def text_error(_: web.Request) -> web.Response:
        return web.Response(status=502, text="Bad Gateway", content_type="text/plain")

    async def json_for_stream(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "not a stream"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            }
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
        size = int(body.get("event_bytes") or 1 << 20)
        content = "x" * size
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {
            "id": "h",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": "stop"}],
        }
        await resp.write(b"data: " + _ENC.encode(chunk) + b"\n\n")
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
        event = b"data: " + _ENC.encode(piece) + b"\n\n"
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

    return {
        "fake-firehose": firehose,
        "fake-html": html,
        "fake-text-error": text_error,
        "fake-json-for-stream": json_for_stream,
        "fake-raw": raw_sse,
        "fake-huge-event": huge_event,
    }.get(model)


async def embeddings(request: web.Request) -> web.Response:
    body = _DEC.decode(await request.read())
    request.app[REQUESTS].append({"headers": dict(request.headers), "body": body, "path": request.path})
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    tokens = sum(len(str(i).split()) for i in items)
    return web.json_response(
        {
            "object": "list",
            "model": body.get("model"),
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(items))],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def models(request: web.Request) -> web.Response:
    request.app[REQUESTS].append({"headers": dict(request.headers), "body": None, "path": request.path})
    return web.json_response(
        {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}
    )


def create_app() -> web.Application:
    app = web.Application(client_max_size=256 << 20)
    app[REQUESTS] = []
    app[CONTROL] = Control()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--reply-prefix", default="", help="text put before every reply")
    args = parser.parse_args()
    app = create_app()
    app[CONTROL].reply_prefix = args.reply_prefix
    web.run_app(app, host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
