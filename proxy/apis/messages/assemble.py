"""Fold a Messages stream's events into the ``message`` a non-streamed call would have returned.

Follows the official streaming reference (and the Anthropic SDK's own accumulation): ``message_start``
gives the message with empty content; each ``content_block_start`` adds a block at its ``index``,
``content_block_delta`` grows it (``text_delta``, ``thinking_delta``, ``signature_delta``,
``citations_delta``, ``input_json_delta`` for tool input), ``message_delta`` sets the stop reason and
cumulative usage, ``message_stop`` ends the message; ``ping`` carries nothing; ``error`` is a failure.

Invariants:
- Pure: feeding the same events gives the same result.
- Usage fields take their last value, never a sum (``wire.merge_usage``).
- Tool input arrives as pieces of JSON text; joined and parsed when the message is built. Input that
  does not parse (a stream cut inside it) keeps the block's starting input.
- Blocks, deltas and fields the proxy does not know are kept as sent, or skipped, never an error.
- Memory is bounded by ``text_limit``: past that many characters of text, thinking and tool input
  together, further pieces are dropped and ``truncated`` is set; stop reason, usage and the end marker
  still come from every event. Pieces are joined once, when the message is built.
"""

from __future__ import annotations

import contextlib
from typing import Any

from proxy.apis.codec import ANY_DECODER, DECODE_ERRORS
from proxy.apis.messages.wire import StreamEvent, merge_usage

# Delta fields that are appended to the block's field of the same name, and the one that replaces it.
_APPENDED = {"text_delta": "text", "thinking_delta": "thinking"}
# Blocks that open empty: only their deltas are output (a tool_use block's start already names a call).
_OPEN_EMPTY = ("text", "thinking")


def _delta_has_output(delta: dict[str, Any]) -> bool:
    return any(delta.get(k) for k in ("text", "thinking", "partial_json", "signature", "citation"))


def _block_has_output(block: dict[str, Any]) -> bool:
    kind = block.get("type")
    return kind not in _OPEN_EMPTY or bool(block.get("text") or block.get("thinking"))


class Assembler:
    """Accumulates events; ``result()`` returns the equivalent ``message`` object."""

    def __init__(self, text_limit: int = 1 << 62) -> None:
        self.room = text_limit
        self.truncated = False
        self.message: dict[str, Any] | None = None
        self.usage: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, list[str]] = {}
        self._text: dict[tuple[int, str], list[str]] = {}  # (block, field) -> pieces of text or thinking
        self.error: Any = None
        self.stopped = False
        self.has_output = False
        self.refused = 0  # usage fields that could not be read

    @property
    def model(self) -> str | None:
        model = self.message.get("model") if self.message is not None else None
        return model if isinstance(model, str) else None

    @property
    def stop_reason(self) -> str | None:
        reason = self.message.get("stop_reason") if self.message is not None else None
        return reason if isinstance(reason, str) else None

    def add(self, event: StreamEvent) -> None:
        kind = event.type
        if kind == "message_start" and event.message is not None:
            self.message = dict(event.message)
            self.refused += merge_usage(self.usage, self.message.get("usage"))
        elif kind == "content_block_start" and event.content_block is not None:
            key = event.index if event.index is not None else len(self.blocks)
            self.blocks[key] = dict(event.content_block)
            self.has_output = self.has_output or _block_has_output(event.content_block)
        elif kind == "content_block_delta" and event.delta is not None:
            self._delta(event.index, event.delta)
        elif kind == "message_delta":
            self._message_delta(event)
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            self.error = event.error if event.error is not None else "error event"

    def _delta(self, index: int | None, delta: dict[str, Any]) -> None:
        self.has_output = self.has_output or _delta_has_output(delta)
        block = self.blocks.get(index) if index is not None else None
        if block is None:
            return  # a delta for a block that never started: nothing to grow
        kind = delta.get("type")
        if kind in _APPENDED:
            field = _APPENDED[kind]
            piece = delta.get(field)
            if isinstance(piece, str) and self._fits(piece):
                self._text.setdefault((index, field), []).append(piece)  # type: ignore[arg-type]
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "input_json_delta":
            piece = delta.get("partial_json")
            if isinstance(piece, str) and self._fits(piece):
                self._json.setdefault(index, []).append(piece)  # type: ignore[arg-type]
        elif kind == "citations_delta":
            citations = block.get("citations")
            block["citations"] = [*(citations if isinstance(citations, list) else ()), delta.get("citation")]

    def _fits(self, piece: str) -> bool:
        if len(piece) > self.room:
            self.truncated = True
            return False
        self.room -= len(piece)
        return True

    def _message_delta(self, event: StreamEvent) -> None:
        if self.message is None:
            self.message = {}
        for key, value in (event.delta or {}).items():
            # The stop fields are set as sent (null included); others, like container, only when present.
            if value is not None or key in ("stop_reason", "stop_sequence"):
                self.message[key] = value
        self.refused += merge_usage(self.usage, event.usage)

    def _content(self) -> list[dict[str, Any]]:
        content = []
        for key in sorted(self.blocks):
            block = dict(self.blocks[key])
            for field in _APPENDED.values():
                if (key, field) in self._text:
                    block[field] = str(block.get(field) or "") + "".join(self._text[key, field])
            text = "".join(self._json.get(key, ()))
            # Cut inside the tool input: the block keeps the input it started with.
            with contextlib.suppress(*DECODE_ERRORS):
                if text:
                    block = {**block, "input": ANY_DECODER.decode(text)}
            content.append(block)
        return content

    def result(self) -> dict[str, Any]:
        base = self.message or {}
        return {"type": "message", "role": "assistant", **base, "content": self._content(), "usage": dict(self.usage)}
