"""Turning a recorded non-streamed completion into the stream a streamed request expects. Pure, no I/O.

Invariants:
- The events carry the same content, refusal, reasoning, tool calls, finish reasons and usage as the
  completion, so folding them back (``assemble.Assembler``) gives the completion again.
- The usage-only chunk is sent only when the client asked for it (``stream_options.include_usage``),
  as a live stream would do.
- Returns None for anything that is not a chat or text completion with choices: that is played as is.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.apis.codec import ANY_DECODER, JSON_ENCODER

DONE = b"data: [DONE]\n\n"


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + JSON_ENCODER.encode(obj) + b"\n\n"


def completion_to_events(body: bytes, wants_usage: bool) -> list[bytes] | None:
    try:
        obj = ANY_DECODER.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        return None
    legacy = obj.get("object") == "text_completion"
    base = {k: obj[k] for k in ("id", "created", "model", "system_fingerprint", "provider") if k in obj}
    base["object"] = "text_completion" if legacy else "chat.completion.chunk"

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return _event({**base, "choices": choices, **extra})

    events: list[bytes] = []
    for choice in obj["choices"]:
        if not isinstance(choice, dict):
            return None
        index = choice.get("index", 0)
        if legacy:
            events.append(chunk([{"index": index, "text": choice.get("text") or "", "finish_reason": None}]))
        else:
            events.extend(chunk([{"index": index, "delta": d, "finish_reason": None}]) for d in _deltas(choice))
        events.append(
            chunk([{"index": index, **({} if legacy else {"delta": {}}), "finish_reason": choice.get("finish_reason")}])
        )
    if wants_usage and obj.get("usage") is not None:
        events.append(chunk([], usage=obj["usage"]))
    events.append(DONE)
    return events


def _deltas(choice: dict[str, Any]) -> list[dict[str, Any]]:
    message = choice.get("message") or {}
    # As OpenAI streams it: the role chunk says content "" for a text answer, null for a tool-call one.
    empty = "" if message.get("content") is not None else None
    deltas: list[dict[str, Any]] = [{"role": message.get("role") or "assistant", "content": empty}]
    for field in ("reasoning", "reasoning_content", "refusal", "content"):
        if message.get(field):
            deltas.append({field: message[field]})
    calls = message.get("tool_calls") or []
    if calls:
        deltas.append({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
    return deltas
