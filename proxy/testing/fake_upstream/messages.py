"""The Anthropic Messages API (``POST /v1/messages``), streamed as its streaming reference describes.

A reply echoes the last user message word by word in a text block. The request decides the rest:
- ``thinking`` enabled (or model ``fake-thinking``): a thinking block first, with its signature;
- ``tools``: a ``tool_use`` block whose input arrives as pieces of JSON (``input_json_delta``), stop
  reason ``tool_use``;
- any ``cache_control`` in ``system``, ``tools`` or a message: cache reads and writes in usage
  (``CACHE_USAGE``: 5-minute and 1-hour writes).
Streams have ``ping`` events after ``message_start`` and between blocks; ``message_start`` carries the
input side of usage and ``output_tokens: 1``; the one ``message_delta`` carries the cumulative counts of
both sides (as the API sends them now). Models: ``fake-error-midstream`` (an ``error`` event after a few
events, HTTP 200), ``fake-cut`` (the connection dropped before ``message_stop``), ``fake-error-NNN``
(that status with Anthropic's error body). The chat module's headers work here too
(``x-fake-delay-ms``, ``x-fake-eof-delay-ms``, ``x-fake-events``, ``app[CONTROL].gate``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.testing.fake_upstream.common import CONTROL, DEC, REQUESTS, echo_pieces, pause, read_body, send_stream, sse


def cache_usage(read: int, five_minutes: int, one_hour: int) -> dict[str, Any]:
    """The cache fields of a Messages ``usage``: reads, and writes in total and by lifetime, as Anthropic
    reports them (``cache_creation_input_tokens`` is the sum of the two lifetimes)."""
    return {
        "cache_creation_input_tokens": five_minutes + one_hour,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": five_minutes, "ephemeral_1h_input_tokens": one_hour},
    }


CACHE_USAGE = cache_usage(read=2000, five_minutes=200, one_hour=100)
SIGNATURE = "EqQBCkgIARABGAIiQL2fake"
# Each content block as it starts, with the deltas that complete it.
Blocks = list[tuple[dict[str, Any], list[dict[str, Any]]]]
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_fake_{status}"}


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return []


def _has_cache_control(body: dict[str, Any]) -> bool:
    parts = [body.get("system"), body.get("tools"), *[m.get("content") for m in body.get("messages") or ()]]
    return any(isinstance(p, list) and any(isinstance(b, dict) and "cache_control" in b for b in p) for p in parts)


def _prompt(body: dict[str, Any]) -> tuple[str, int]:
    """The last user text, and the input tokens: the words of the system prompt and every message."""
    words = sum(len(t.split()) for t in _texts(body.get("system")))
    last = ""
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            texts = _texts(message.get("content"))
            words += sum(len(t.split()) for t in texts)
            if message.get("role") == "user" and texts:
                last = texts[-1]
    return last, words


def _blocks(request: web.Request, body: dict[str, Any]) -> Blocks:
    """Each content block as it starts, with the deltas that complete it."""
    last, _ = _prompt(body)
    control = request.app[CONTROL]
    blocks = []
    thinking = body.get("thinking")
    if body.get("model") == "fake-thinking" or (isinstance(thinking, dict) and thinking.get("type") == "enabled"):
        deltas = [{"type": "thinking_delta", "thinking": w} for w in ("The user ", "wants an echo.")]
        deltas.append({"type": "signature_delta", "signature": SIGNATURE})
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
    pieces = echo_pieces(request, last)
    blocks.append(({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces]))
    if body.get("tools"):
        args = control.tool_arguments
        start = {"type": "tool_use", "id": "toolu_fake01", "name": "get_weather", "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        deltas += [{"type": "input_json_delta", "partial_json": args[j : j + 7]} for j in range(0, len(args), 7)]
        blocks.append((start, deltas))
    return blocks


def _finished(block: dict[str, Any], deltas: list[dict[str, Any]]) -> dict[str, Any]:
    done = dict(block)
    for d in deltas:
        if d["type"] == "text_delta":
            done["text"] += d["text"]
        elif d["type"] == "thinking_delta":
            done["thinking"] += d["thinking"]
        elif d["type"] == "signature_delta":
            done["signature"] = d["signature"]
    if block["type"] == "tool_use":
        done["input"] = _json_input("".join(d["partial_json"] for d in deltas))
    return done


def _json_input(text: str) -> Any:
    return DEC.decode(text) if text else {}


def _usage(body: dict[str, Any], output: int) -> dict[str, Any]:
    _, words = _prompt(body)
    cache = CACHE_USAGE if _has_cache_control(body) else {}
    return {"input_tokens": words, **cache, "output_tokens": output, "service_tier": "standard"}


async def messages(request: web.Request) -> web.StreamResponse:
    body = await read_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return web.json_response(error_body(400, "model: Field required"), status=400)
    model = body["model"]
    status = model.removeprefix("fake-error-")
    if model.startswith("fake-error-") and status.isdigit():
        return web.json_response(error_body(int(status), f"fake upstream error {status}"), status=int(status))
    blocks = _blocks(request, body)
    output = sum(len(deltas) for _, deltas in blocks)
    stop_reason = "tool_use" if body.get("tools") else "end_turn"
    ident = f"msg_fake{len(request.app[REQUESTS])}"  # unique: repeated prompts differ
    message = {"id": ident, "type": "message", "role": "assistant", "model": model, "content": []}
    message |= {"stop_reason": None, "stop_sequence": None, "usage": _usage(body, 1)}
    if body.get("stream"):
        return await _stream(request, message, blocks, stop_reason, _usage(body, output))
    await pause(request)
    message |= {"content": [_finished(b, d) for b, d in blocks], "stop_reason": stop_reason}
    message["usage"] = _usage(body, output)
    return web.json_response(message, headers={"request-id": f"req_{ident}"})


def _events(message: dict[str, Any], blocks: Blocks, stop_reason: str, usage: dict[str, Any]) -> list[bytes]:
    out = [
        sse({"type": "message_start", "message": message}, event="message_start"),
        sse({"type": "ping"}, event="ping"),
    ]
    for i, (block, deltas) in enumerate(blocks):
        if i:
            out.append(sse({"type": "ping"}, event="ping"))
        out.append(
            sse({"type": "content_block_start", "index": i, "content_block": block}, event="content_block_start")
        )
        out += [
            sse({"type": "content_block_delta", "index": i, "delta": d}, event="content_block_delta") for d in deltas
        ]
        out.append(sse({"type": "content_block_stop", "index": i}, event="content_block_stop"))
    counts = {k: v for k, v in usage.items() if k.endswith("_tokens")}
    delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": counts}
    out.append(sse(delta, event="message_delta"))
    out.append(sse({"type": "message_stop"}, event="message_stop"))
    return out


async def _stream(
    request: web.Request,
    message: dict[str, Any],
    blocks: Blocks,
    stop_reason: str,
    usage: dict[str, Any],
) -> web.StreamResponse:
    model = message["model"]
    out = _events(message, blocks, stop_reason, usage)
    if model == "fake-error-midstream":
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        out = [*out[:5], sse(error, event="error")]
    elif model == "fake-cut":
        out = out[:5]
    return await send_stream(request, out, request_id=f"req_{message['id']}", cut_after=model == "fake-cut")


ROUTES = [web.post("/v1/messages", messages)]
