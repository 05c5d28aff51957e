"""A recorded non-streamed response played as the semantic events a streamed request expects. Pure.

Invariants:
- The events are framed as OpenAI frames them (``event: TYPE`` then ``data: JSON``), numbered by
  ``sequence_number``, and end with the terminal event for the response's status carrying the recorded
  response whole, so folding them back (``assemble.Assembler``) gives the recorded body again.
- Text, refusals, reasoning summaries and function-call arguments come as one delta each, inside the
  added/done events of their items and parts; other item types come as an added and a done event.
- Returns None for anything that is not a finished response (no ``output`` list, or a status other
  than completed, incomplete or failed, as a background response still queued is): it cannot be a stream.
  ``unconvertible`` says why, in words a replay miss can quote; it judges a stream's assembled response
  the same way, since a non-streamed call would have returned that object.
"""

from __future__ import annotations

from typing import Any

from proxy.apis.codec import JSON_ENCODER, decode_json

TERMINAL_EVENT = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}


class _Events:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def add(self, kind: str, **fields: Any) -> None:
        data = JSON_ENCODER.encode({"type": kind, **fields, "sequence_number": len(self.out)})
        self.out.append(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")


def unconvertible(body: bytes) -> str | None:
    """Why a recorded response object cannot be played in the other form (stream <-> JSON); None: it can."""
    return _problem(decode_json(body))


def _problem(obj: Any) -> str | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("output"), list):
        return "the recorded body is not a Responses object with an output list"
    status = obj.get("status")
    if status in ("queued", "in_progress"):
        return (
            f"the recorded response's status is {status!r}: it had not finished (a background response, or a "
            "stream cut short), so there is no finished response to play"
        )
    if status not in TERMINAL_EVENT:
        return f"the recorded response's status is {status!r}: a stream ends only as completed, incomplete or failed"
    if not all(isinstance(item, dict) for item in obj["output"]):
        return "an output item of the recorded response is not an object"
    return None


def response_to_events(body: bytes) -> list[bytes] | None:
    obj = decode_json(body)
    if _problem(obj) is not None:
        return None
    events = _Events()
    start = {**obj, "status": "in_progress", "output": [], "usage": None, "error": None, "incomplete_details": None}
    events.add("response.created", response=start)
    events.add("response.in_progress", response=start)
    for index, item in enumerate(obj["output"]):
        _item(events, index, item)
    events.add(TERMINAL_EVENT[obj["status"]], response=obj)
    return events.out


def _item(events: _Events, index: int, item: dict[str, Any]) -> None:
    kind = item.get("type")
    where = {"item_id": item.get("id"), "output_index": index}
    if kind == "message" and isinstance(item.get("content"), list):
        events.add(
            "response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []}
        )
        for j, part in enumerate(item["content"]):
            _content_part(events, where, j, part)
    elif kind == "function_call":
        events.add(
            "response.output_item.added", output_index=index, item={**item, "arguments": "", "status": "in_progress"}
        )
        arguments = item.get("arguments") or ""
        events.add("response.function_call_arguments.delta", **where, delta=arguments)
        events.add("response.function_call_arguments.done", **where, arguments=arguments, name=item.get("name"))
    elif kind == "reasoning" and isinstance(item.get("summary"), list):
        events.add("response.output_item.added", output_index=index, item={**item, "summary": []})
        for k, part in enumerate(item["summary"]):
            text = part.get("text", "") if isinstance(part, dict) else ""
            at = {**where, "summary_index": k}
            events.add("response.reasoning_summary_part.added", **at, part={"type": "summary_text", "text": ""})
            events.add("response.reasoning_summary_text.delta", **at, delta=text)
            events.add("response.reasoning_summary_text.done", **at, text=text)
            events.add("response.reasoning_summary_part.done", **at, part=part)
    else:
        events.add("response.output_item.added", output_index=index, item=item)
    events.add("response.output_item.done", output_index=index, item=item)


def _content_part(events: _Events, where: dict[str, Any], j: int, part: Any) -> None:
    at = {**where, "content_index": j}
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "output_text":
        text = part.get("text") or ""
        events.add("response.content_part.added", **at, part={**part, "text": "", "annotations": []})
        events.add("response.output_text.delta", **at, delta=text, logprobs=[])
        events.add("response.output_text.done", **at, text=text, logprobs=[])
    elif kind == "refusal":
        refusal = part.get("refusal") or ""
        events.add("response.content_part.added", **at, part={**part, "refusal": ""})
        events.add("response.refusal.delta", **at, delta=refusal)
        events.add("response.refusal.done", **at, refusal=refusal)
    else:
        events.add("response.content_part.added", **at, part=part)
    events.add("response.content_part.done", **at, part=part)
