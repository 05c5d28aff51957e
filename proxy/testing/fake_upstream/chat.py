"""Chat completions, and legacy completions (``text`` choices, ``text_completion`` objects), as OpenAI,
OpenRouter, vLLM and LiteLLM stream them.

The chat wire shapes here (``chunk_object``, ``completion_object``) are also the benchmark upstream's.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.testing.fake_upstream import common, odd


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
    # The same fields in the same order as a chunk's, and the usage last.
    return {**chunk_object(ident, created, model, choices, fingerprint), "object": "chat.completion", "usage": usage}


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


@dataclass
class _Call:
    """One chat (or legacy completions) request and the answer the fake gives it."""

    model: str
    n: int
    pieces: list[str]
    usage: dict[str, Any]
    ident: str
    created: int
    legacy: bool  # /v1/completions: `text` choices, `text_completion` objects
    tool_arguments: str

    def choice(self, i: int, piece: str | None, finish: str | None) -> dict[str, Any]:
        """A streamed choice: a text piece (legacy), a content delta, or the empty delta that ends it."""
        if self.legacy:
            return {"text": piece or "", "index": i, "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {} if piece is None else {"content": piece}
        if piece is not None and self.model == "fake-reasoning":
            delta["reasoning_content"] = "think "
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

    def answer(self) -> dict[str, Any]:
        tools = self.model == "fake-tools" and not self.legacy
        choices = []
        for i in range(self.n):
            finish = "tool_calls" if tools else "stop"
            if self.legacy:
                choices.append({"text": "".join(self.pieces), "index": i, "logprobs": None, "finish_reason": finish})
                continue
            message: dict[str, Any] = {"role": "assistant", "content": None if tools else "".join(self.pieces)}
            if tools:
                message["tool_calls"] = [_tool_call_full(self.tool_arguments)]
            choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
        obj = completion_object(self.ident, self.created, self.model, choices, self.usage)
        return {**obj, "object": "text_completion"} if self.legacy else obj


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await common.read_openai_request(request)
    if isinstance(body, web.Response):
        return body
    model = str(body.get("model", "fake-model"))
    if model == "fake-strict" and "stream_options" in body:
        # Servers that validate strictly (older vLLM, some gateways) refuse the field outright.
        error = {"message": "stream_options: Extra inputs are not permitted", "type": "BadRequestError", "code": 400}
        return web.json_response({"object": "error", **error, "error": error}, status=400)
    misbehaving = odd.handler(model, body)
    if misbehaving is not None:
        return await misbehaving(request)
    legacy = request.path.rstrip("/").endswith("/v1/completions")
    control = request.app[common.CONTROL]
    prompt = _prompt_text(body.get("prompt")) if legacy else _last_user_text(body.get("messages"))
    pieces = common.echo_pieces(request, prompt)
    n = int(body.get("n") or 1)
    prompt_tokens = len(prompt.split()) if legacy else len(_words(body.get("messages")))
    created = int(time.time())
    call = _Call(
        model=model,
        n=n,
        pieces=pieces,
        usage=_usage(model, prompt_tokens, len(pieces) * n),
        ident=f"{'cmpl' if legacy else 'chatcmpl'}-fake{created}-{len(request.app[common.REQUESTS])}",  # repeats differ
        created=created,
        legacy=legacy,
        tool_arguments=control.tool_arguments,
    )
    if body.get("stream"):
        return await _stream(request, body, call)
    await common.pause(request)
    data = common.ENC.encode(call.answer())
    headers = {"x-request-id": "req_fake_ok"}
    if request.headers.get("x-fake-gzip") == "1":
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=data, content_type="application/json", headers=headers)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return " ".join(p for p in prompt if isinstance(p, str))
    return prompt if isinstance(prompt, str) else ""


def _tool_chunks(arguments: str) -> list[list[dict[str, Any]]]:
    """The choices of a tool call streamed like OpenAI: id and name first, then the arguments in pieces."""
    call = _tool_call_full(arguments)
    head = {"index": 0, "id": call["id"], "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    choices = [[{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}]]
    for j in range(0, len(arguments), 7):
        piece = {"index": 0, "function": {"arguments": arguments[j : j + 7]}}
        choices.append([{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}])
    return choices


def _chunks(body: dict[str, Any], call: _Call) -> list[bytes]:
    """Every event of the stream, as the upstream sends it."""
    model, n = call.model, call.n
    openrouter = model == "fake-openrouter"
    eol = "\r\n" if openrouter else "\n"
    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and model != "fake-no-usage"
    shared: dict[str, Any] = {"provider": "FakeProvider"} if openrouter else {"usage": None} if include_usage else {}
    every = model == "fake-usage-every-chunk"  # usage so far on every chunk, asked for or not
    sent = 0

    def chunk(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
        stamp = call.created + 0.5 if openrouter else call.created
        fields = {**shared, **(extra or {})}
        if every:
            fields["usage"] = {
                **call.usage,
                "completion_tokens": sent,
                "total_tokens": call.usage["prompt_tokens"] + sent,
            }
        obj = chunk_object(call.ident, stamp, model, choices, **fields)
        if call.legacy:
            obj = {**obj, "object": "text_completion"}
            del obj["system_fingerprint"]
        return common.sse(obj, eol)

    out = []
    if not call.legacy:
        role = {"role": "assistant", "content": ""}
        out.append(chunk([{"index": i, "delta": role, "logprobs": None, "finish_reason": None} for i in range(n)]))
    if model == "fake-tools" and not call.legacy:
        out += [chunk(choices) for choices in _tool_chunks(call.tool_arguments)]
        finish = "tool_calls"
    else:
        for piece in call.pieces:
            for i in range(n):
                sent += 1
                out.append(chunk([call.choice(i, piece, None)]))
        finish = "stop"
    if model == "fake-error-midstream":
        out = out[:3]
        error = {"error": {"code": 502, "message": "provider overloaded mid-generation"}}
        out.append(chunk([{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}], error))
        return out
    if model == "fake-cut":
        return out[:3]
    last = [call.choice(i, None, finish) for i in range(n)]
    if openrouter:
        out.append(chunk(last, {"usage": call.usage}))
    else:
        out.append(chunk(last))
        if include_usage and model == "fake-litellm":
            # LiteLLM's proxy carries usage on a chunk with one empty choice, not on `choices: []`.
            out.append(chunk([call.choice(0, None, None)], {"usage": call.usage}))
        elif include_usage:
            out.append(chunk([], {"usage": call.usage}))
    out.append(f"data: [DONE]{eol}{eol}".encode())
    return out


async def _stream(request: web.Request, body: dict[str, Any], call: _Call) -> web.StreamResponse:
    openrouter = call.model == "fake-openrouter"
    eol = "\r\n" if openrouter else "\n"
    out = _chunks(body, call)
    # OpenRouter's keep-alive comment, before the first event and again mid-stream.
    comment = f": OPENROUTER PROCESSING{eol}{eol}".encode()
    before = {0: comment, len(out) // 2: comment} if openrouter else None
    return await common.send_stream(request, out, before=before, cut_after=call.model == "fake-cut")


ROUTES = [
    web.post("/v1/chat/completions", chat_completions),
    web.post("/v1/completions", chat_completions),
]
