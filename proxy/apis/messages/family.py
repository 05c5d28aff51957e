"""The Anthropic Messages family: reading requests, folding streams and bodies, conversion for replay,
and errors in the shape the Anthropic SDK expects.

Invariants:
- Nothing is injected: Messages always reports usage, on every stream; nothing is hidden from a client.
- A stream is complete at ``message_stop`` only. An ``error`` event ends it as a failure
  (``upstream_error_event``); without either it is cut.
- TTFT is the first event carrying output of any kind: text, thinking, a signature, citations, tool
  input, or a block that is itself output (a ``tool_use`` block's start).
- Usage: ``message_start`` carries the input side, ``message_delta`` cumulative counts: each field's
  last value, never a sum (``wire``); cache reads and writes are part of the prompt tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.apis.codec import DECODE_ERRORS, JSON_ENCODER
from proxy.apis.errors import anthropic_error_body, error_message
from proxy.apis.family import (
    COMMON_IGNORED,
    Event,
    Folded,
    NoUsageOption,
    RequestInfo,
    StreamFold,
    fold_json_body,
)
from proxy.apis.messages import convert
from proxy.apis.messages.assemble import Assembler
from proxy.apis.messages.wire import (
    EVENT_DECODER,
    MESSAGE_DECODER,
    REQUEST_DECODER,
    MessageView,
    record_usage,
    usage_view,
)


class MessagesStreamFold:
    """A Messages stream folded as it passes into the record's fields and the ``message`` it amounts to."""

    def __init__(self, text_limit: int) -> None:
        self.asm = Assembler(text_limit)
        self.folded = Folded()

    def feed(self, events: Iterable[Event]) -> None:
        asm, folded = self.asm, self.folded
        for event in events:
            folded.events += 1
            try:
                data = EVENT_DECODER.decode(event.data)
            except DECODE_ERRORS:
                folded.decode_errors += 1
                continue
            data.type = data.type or event.type or None
            asm.add(data)
            if folded.ttft_ms is None and asm.has_output:
                folded.ttft_ms = event.offset_ms
            if folded.complete_at is None and (asm.stopped or asm.error is not None):
                folded.complete_at = event.end

    def result(self) -> Folded:
        asm, folded = self.asm, self.folded
        folded.usage = record_usage(usage_view(asm.usage))
        folded.decode_errors += asm.refused
        folded.model, folded.finish_reason = asm.model, asm.stop_reason
        if asm.message is not None or asm.blocks:
            folded.assembled = JSON_ENCODER.encode(asm.result())
        if asm.error is not None:
            folded.error, folded.error_event = error_message(asm.error), True
        return folded


def _fill(folded: Folded, view: MessageView) -> None:
    folded.usage = record_usage(view.usage)
    folded.model, folded.finish_reason = view.model, view.stop_reason
    if view.error is not None:
        folded.error = error_message(view.error)


@dataclass(frozen=True)
class MessagesFamily(NoUsageOption):
    name: str = "messages"
    # ``metadata.user_id`` names the end user; it changes no answer.
    ignored: tuple[str, ...] = COMMON_IGNORED
    end_marker: str = "message_stop"
    error_body = staticmethod(anthropic_error_body)

    def read_request(self, body: bytes) -> RequestInfo | None:
        if not body.lstrip().startswith(b"{"):
            return None
        try:
            view = REQUEST_DECODER.decode(body)
        except DECODE_ERRORS:
            return None  # the upstream answers a malformed request itself
        user = view.metadata.user_id if view.metadata is not None else None
        return RequestInfo(model=view.model, stream=bool(view.stream), user=user)

    def stream_fold(self, text_limit: int) -> StreamFold:
        return MessagesStreamFold(text_limit)

    def fold_body(self, body: bytes) -> Folded:
        return fold_json_body(body, MESSAGE_DECODER, _fill)

    def body_to_stream(self, body: bytes, wants_usage: bool) -> list[bytes] | None:
        return convert.message_to_events(body)


MESSAGES = MessagesFamily()
