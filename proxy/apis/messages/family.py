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

from dataclasses import dataclass

from proxy.apis.codec import JSON_ENCODER
from proxy.apis.errors import anthropic_error_body, error_message
from proxy.apis.family import (
    Defaults,
    Event,
    EventFold,
    Folded,
    NoUsageOption,
    RequestInfo,
    decode_request,
    fold_json_body,
)
from proxy.apis.messages import convert
from proxy.apis.messages.assemble import Assembler
from proxy.apis.messages.wire import (
    EVENT_DECODER,
    MESSAGE_DECODER,
    REQUEST_DECODER,
    MessageView,
    StreamEvent,
    record_usage,
    usage_view,
)


class MessagesStreamFold(EventFold[StreamEvent, Assembler]):
    """A Messages stream folded as it passes into the record's fields and the ``message`` it amounts to."""

    decoder = EVENT_DECODER
    assembler = Assembler

    def step(self, event: Event, data: StreamEvent) -> tuple[bool, bool]:
        data.type = data.type or event.type or None
        self.asm.add(data)
        return self.asm.has_output, self.asm.stopped or self.asm.error is not None

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
class MessagesFamily(NoUsageOption, Defaults):
    # The common ignored fields include ``metadata``: its ``user_id`` names the end user, it changes no answer.
    name: str = "messages"
    end_marker: str = "message_stop"
    error_body = staticmethod(anthropic_error_body)
    stream_fold = staticmethod(MessagesStreamFold)

    def read_request(self, body: bytes) -> RequestInfo | None:
        view = decode_request(body, REQUEST_DECODER)
        if view is None:
            return None
        user = view.metadata.user_id if view.metadata is not None else None
        return RequestInfo(model=view.model, stream=bool(view.stream), user=user)

    def fold_body(self, body: bytes) -> Folded:
        return fold_json_body(body, MESSAGE_DECODER, _fill)

    def body_to_stream(self, body: bytes, wants_usage: bool) -> list[bytes] | None:
        return convert.message_to_events(body)


MESSAGES = MessagesFamily()
