"""Turning a recorded non-streamed ``message`` into the stream a streamed request expects. Pure, no I/O.

Invariants:
- Framed as the Messages API frames its streams: an ``event:`` line naming each event's type (the
  Anthropic SDK reads only named events) and one ``data:`` line.
- The events carry the same blocks (text, thinking with its signature, tool input, citations, any
  other block whole), stop reason and usage as the message, so folding them back
  (``assemble.Assembler``) gives the message again.
- Returns None for anything that is not a ``message`` object with a content list: that is played as is.
"""

from __future__ import annotations

from typing import Any

from proxy.apis.codec import ANY_DECODER, DECODE_ERRORS, JSON_ENCODER

# message_start carries the input side of usage; message_delta the cumulative counts and the output side.
_OUTPUT_SIDE = ("output_tokens", "output_tokens_details", "server_tool_use")
_DELTA_USAGE = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", *_OUTPUT_SIDE)
_TOOL_INPUT = ("tool_use", "server_tool_use", "mcp_tool_use")


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + JSON_ENCODER.encode({"type": kind, **data}) + b"\n\n"


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    kind = block.get("type")
    start: dict[str, Any] = dict(block)
    deltas: list[dict[str, Any]] = []
    if kind == "text":
        start["text"] = ""
        if block.get("citations"):
            start["citations"] = []
            deltas += [{"type": "citations_delta", "citation": c} for c in block["citations"]]
        if block.get("text"):
            deltas.append({"type": "text_delta", "text": block["text"]})
    elif kind == "thinking":
        start["thinking"], start["signature"] = "", ""
        if block.get("thinking"):
            deltas.append({"type": "thinking_delta", "thinking": block["thinking"]})
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind in _TOOL_INPUT:
        start["input"] = {}
        if block.get("input"):
            deltas.append({"type": "input_json_delta", "partial_json": JSON_ENCODER.encode(block["input"]).decode()})
    out = [event("content_block_start", {"index": index, "content_block": start})]
    out += [event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
    out.append(event("content_block_stop", {"index": index}))
    return out


def message_to_events(body: bytes) -> list[bytes] | None:
    try:
        message = ANY_DECODER.decode(body)
    except DECODE_ERRORS:
        return None
    if not isinstance(message, dict) or message.get("type") != "message":
        return None
    content = message.get("content")
    if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
        return None
    usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
    start_usage = {**{k: v for k, v in usage.items() if k not in _OUTPUT_SIDE}, "output_tokens": 0}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events = [event("message_start", {"message": start})]
    for index, block in enumerate(content):
        events += _block_events(index, block)
    stop = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    delta_usage = {k: usage[k] for k in _DELTA_USAGE if k in usage}
    events.append(event("message_delta", {"delta": stop, "usage": delta_usage}))
    events.append(event("message_stop", {}))
    return events
