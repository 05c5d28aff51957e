"""Chat completions (and legacy completions, served the same way) as OpenAI, OpenRouter and vLLM stream them.

The chat wire shapes here (``chunk_object``, ``completion_object``) are also the benchmark upstream's.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from typing import Any

from aiohttp import web

from proxy.testing.fake_upstream import odd
from proxy.testing.fake_upstream.common import (
    CONTROL,
    ENC,
    REQUESTS,
    cut,
    delay_of,
    echo_pieces,
    events_of,
    invalid_body,
    read_body,
    sse,
    status_error,
    stream_end,
    stream_start,
)


def chunk_object(
    ident: str, created: float, model: str, choices: list[dict[str, Any]], fingerprint: str = "fp_fake", **extra: Any
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": choices,
        **extra,
    }


def completion_object(
    ident: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any],
    fingerprint: str = "fp_fake",
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": choices,
        "usage": usage,
    }


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


def _tool_call_full(arguments: str) -> dict[str, Any]:
    return {"id": "call_fake1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("model", ""), str):
        return invalid_body()
    model = str(body.get("model", "fake-model"))
    refused = status_error(model)
    if refused is not None:
        return refused
    if model == "fake-strict" and "stream_options" in body:
        # Servers that validate strictly (older vLLM, some gateways) refuse the field outright.
        error = {"message": "stream_options: Extra inputs are not permitted", "type": "BadRequestError", "code": 400}
        return web.json_response({"object": "error", **error, "error": error}, status=400)
    misbehaving = odd.handler(model, body)
    if misbehaving is not None:
        return await misbehaving(request)
    n = int(body.get("n") or 1)
    control = request.app[CONTROL]
    pieces = echo_pieces(_last_user_text(body.get("messages")), events_of(request), control.reply_prefix)
    usage = _usage(model, len(_words(body.get("messages"))), len(pieces) * n)
    created = int(time.time())
    ident = f"chatcmpl-fake{created}-{len(request.app[REQUESTS])}"  # unique: repeated prompts differ
    if body.get("stream"):
        return await _stream(request, body, model, pieces, n, usage, ident, created)
    if delay_of(request):
        await asyncio.sleep(delay_of(request))
    tools = model == "fake-tools"
    choices = []
    for i in range(n):
        message: dict[str, Any] = {"role": "assistant", "content": None if tools else "".join(pieces)}
        if tools:
            message["tool_calls"] = [_tool_call_full(control.tool_arguments)]
        finish = "tool_calls" if tools else "stop"
        choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
    data = ENC.encode(completion_object(ident, created, model, choices, usage))
    headers = {"x-request-id": "req_fake_ok"}
    if request.headers.get("x-fake-gzip") == "1":
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=data, content_type="application/json", headers=headers)


def _tool_chunks(arguments: str) -> list[list[dict[str, Any]]]:
    """The choices of a tool call streamed like OpenAI: id and name first, then the arguments in pieces."""
    call = _tool_call_full(arguments)
    head = {"index": 0, "id": call["id"], "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    choices = [[{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}]]
    for j in range(0, len(arguments), 7):
        piece = {"index": 0, "function": {"arguments": arguments[j : j + 7]}}
        choices.append([{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}])
    return choices


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
    common: dict[str, Any] = {"provider": "FakeProvider"} if openrouter else {"usage": None} if include_usage else {}

    def chunk(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
        stamp = created + 0.5 if openrouter else created
        return sse(chunk_object(ident, stamp, model, choices, **{**common, **(extra or {})}), eol)

    role = {"role": "assistant", "content": ""}
    out = [chunk([{"index": i, "delta": role, "logprobs": None, "finish_reason": None} for i in range(n)])]
    if model == "fake-tools":
        out += [chunk(choices) for choices in _tool_chunks(request.app[CONTROL].tool_arguments)]
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
        error = {"error": {"code": 502, "message": "provider overloaded mid-generation"}}
        out.append(chunk([{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}], error))
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

    resp = await stream_start(request)
    if openrouter:
        await resp.write(f": OPENROUTER PROCESSING{eol}{eol}".encode())
    gate, delay = request.app[CONTROL].gate, delay_of(request)
    for k, data in enumerate(out):
        if k == 1 and gate is not None:
            await gate.wait()
        if delay and k:
            await asyncio.sleep(delay)
        if openrouter and k == len(out) // 2:
            await resp.write(f": OPENROUTER PROCESSING{eol}{eol}".encode())
        await resp.write(data)
    if model == "fake-cut":
        cut(request)
        return resp
    await stream_end(request, resp)
    return resp


ROUTES = [
    web.post("/v1/chat/completions", chat_completions),
    web.post("/v1/completions", chat_completions),
]
