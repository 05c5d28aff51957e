"""Fold a Responses stream's semantic events into the ``response`` object a non-streamed call returns.

Invariants:
- Pure: no I/O, no clock; the same events give the same result.
- A stream that reached its terminal event (``response.completed``, ``response.incomplete`` or
  ``response.failed``) assembles to that event's ``response`` exactly as sent (its raw bytes): it is the
  final object. A stream without one assembles to the last ``response`` snapshot seen, its ``output``
  rebuilt from the items and deltas that arrived, so a cut stream still shows what was generated.
- Usage is the last ``response.usage`` seen (the reference sends it on the terminal event; servers that
  send it on every snapshot give the usage seen so far), never a sum.
- Memory is bounded: delta text kept for a cut stream's assembly stops at ``text_limit`` characters
  (the terminal event's response is one event, already bounded by the largest event the proxy takes).
- Events are untrusted: a field of an unexpected type is skipped, never raised on.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.apis.codec import ANY_DECODER, DECODE_ERRORS, JSON_ENCODER
from proxy.apis.responses.wire import RESPONSE_DECODER, ResponseObject, ResponsesUsage, StreamEvent

# The events that end a stream, and the status each leaves the response in.
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
# Delta events: (the item's list the piece goes in, the event field indexing it, the text field it extends).
_DELTAS: dict[str, tuple[str | None, str | None, str]] = {
    "response.output_text.delta": ("content", "content_index", "text"),
    "response.refusal.delta": ("content", "content_index", "refusal"),
    "response.reasoning_text.delta": ("content", "content_index", "text"),
    "response.reasoning_summary_text.delta": ("summary", "summary_index", "text"),
    "response.function_call_arguments.delta": (None, None, "arguments"),
    "response.custom_tool_call_input.delta": (None, None, "input"),
    "response.mcp_call_arguments.delta": (None, None, "arguments"),
    "response.code_interpreter_call_code.delta": (None, None, "code"),
}
# Events that open a part inside an item: (the item's list, the event field indexing it).
_PARTS = {
    "response.content_part.added": ("content", "content_index"),
    "response.reasoning_summary_part.added": ("summary", "summary_index"),
}
_OUTPUT_EVENTS = ("response.output_item.done", "response.image_generation_call.partial_image")


def produces_output(kind: str, event: StreamEvent) -> bool:
    """Whether the event carries output of any kind: a non-empty delta, an image, or a finished item."""
    if kind.endswith(".delta"):
        return bool(event.delta)
    return kind in _OUTPUT_EVENTS


def _slot(items: list[Any], index: int) -> dict[str, Any] | None:
    while len(items) <= index:
        items.append({})
    return items[index] if isinstance(items[index], dict) else None


class Assembler:
    """Accumulates events; ``result()`` is the response as JSON bytes (None before any event)."""

    def __init__(self, text_limit: int) -> None:
        self.text_left = text_limit  # characters of delta text still kept for a cut stream's assembly
        self.events = 0
        self.terminal: str | None = None  # the type of the terminal event, once seen
        self.response: ResponseObject | None = None  # the last `response` decoded
        self.usage: ResponsesUsage | None = None
        self.model: str | None = None
        self.error: Any = None
        self._raw: bytes | None = None  # the last `response`, as sent
        self._items: dict[int, dict[str, Any]] = {}

    def add(self, kind: str, event: StreamEvent) -> None:
        self.events += 1
        raw = bytes(event.response)
        if raw != b"null":
            self._snapshot(kind, raw)
        if kind == "error":
            self.error = event.error if event.error is not None else {"message": event.message, "code": event.code}
        index = event.output_index if isinstance(event.output_index, int) and event.output_index >= 0 else None
        if index is None or self.terminal is not None:
            return
        if kind in ("response.output_item.added", "response.output_item.done") and isinstance(event.item, dict):
            self._items[index] = event.item
        elif kind in _PARTS and isinstance(event.part, dict):
            self._part(index, *_PARTS[kind], event)
        elif kind in _DELTAS and isinstance(event.delta, str):
            self._delta(index, *_DELTAS[kind], event)

    def _snapshot(self, kind: str, raw: bytes) -> None:
        try:
            view = RESPONSE_DECODER.decode(raw)
        except DECODE_ERRORS:
            return
        self.response, self._raw = view, raw
        self.model = view.model or self.model
        if view.usage is not None:
            self.usage = view.usage
        if kind in TERMINAL:
            self.terminal = kind
            if view.error is not None:
                self.error = view.error

    def _part(self, index: int, field: str, at: str, event: StreamEvent) -> None:
        position = getattr(event, at)
        item = self._items.setdefault(index, {})
        parts = item.setdefault(field, [])
        if isinstance(parts, list) and isinstance(position, int) and 0 <= position < 1024:
            _slot(parts, position)
            parts[position] = event.part

    def _delta(self, index: int, field: str | None, at: str | None, text: str, event: StreamEvent) -> None:
        target: dict[str, Any] | None = self._items.setdefault(index, {})
        if field is not None and at is not None and target is not None:
            parts = target.setdefault(field, [])
            position = getattr(event, at)
            if not (isinstance(parts, list) and isinstance(position, int) and 0 <= position < 1024):
                return
            target = _slot(parts, position)
        if target is not None and self.text_left > 0:
            self.text_left -= len(event.delta)
            before = target.get(text)
            target[text] = (before if isinstance(before, str) else "") + event.delta

    def result(self) -> bytes | None:
        if self.terminal is not None and self._raw is not None:
            return self._raw
        if not self.events:
            return None
        base: Any = ANY_DECODER.decode(self._raw) if self._raw is not None else None
        out: dict[str, Any] = base if isinstance(base, dict) else {"object": "response", "status": "in_progress"}
        if self._items:
            out["output"] = [self._items[k] for k in sorted(self._items)]
        if self.error is not None:
            out["error"] = self.error
        try:
            return JSON_ENCODER.encode(out)
        except (TypeError, msgspec.EncodeError):
            return None
