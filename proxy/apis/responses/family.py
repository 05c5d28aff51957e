"""The Responses family: reading requests, folding streams and bodies, conversion for replay.

Invariants:
- Responses always report usage, so nothing is injected and nothing is hidden from the client.
- A stream is complete at its terminal event: ``response.completed`` (status completed),
  ``response.incomplete`` (complete, finish reason ``incomplete_details.reason``, e.g.
  ``max_output_tokens``) or ``response.failed`` (an error event: the failure the response carries).
  An ``error`` event ends it as an error event too. Without any of them it is cut.
- TTFT is the first event carrying output of any kind: a non-empty text, refusal, reasoning or
  tool-call-arguments delta, an image, or a finished output item.
- The finish reason is the response's ``status`` (``completed``, ``failed``), or for an incomplete one
  the reason it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.apis.chat.family import read_request
from proxy.apis.errors import error_message
from proxy.apis.family import (
    COMMON_IGNORED,
    Defaults,
    Event,
    EventFold,
    Folded,
    NoUsageOption,
    fold_json_body,
)
from proxy.apis.responses import convert
from proxy.apis.responses.assemble import Assembler, produces_output
from proxy.apis.responses.wire import EVENT_DECODER, RESPONSE_DECODER, ResponseObject, StreamEvent, record_usage


def finish_reason(response: ResponseObject | None) -> str | None:
    if response is None:
        return None
    if response.status == "incomplete" and response.incomplete_details is not None:
        return response.incomplete_details.reason or response.status
    return response.status


class ResponsesStreamFold(EventFold[StreamEvent, Assembler]):
    """A Responses stream folded as it passes: outcome, TTFT, usage, and the response it amounts to."""

    decoder = EVENT_DECODER
    assembler = Assembler

    def step(self, event: Event, view: StreamEvent) -> tuple[bool, bool]:
        kind = view.type or event.type
        self.asm.add(kind, view)
        return produces_output(kind, view), self.asm.terminal is not None or kind == "error"

    def result(self) -> Folded:
        asm, folded = self.asm, self.folded
        folded.usage = record_usage(asm.usage)
        folded.provider_cost = asm.usage.cost if asm.usage is not None else None
        folded.model = asm.model
        folded.finish_reason = finish_reason(asm.response) if asm.terminal is not None else None
        folded.assembled = asm.result()
        if asm.error is not None:
            folded.error, folded.error_event = error_message(asm.error), True
        return folded


def _fill(folded: Folded, view: ResponseObject) -> None:
    folded.usage = record_usage(view.usage)
    folded.provider_cost = view.usage.cost if view.usage is not None else None
    folded.model = view.model
    folded.finish_reason = finish_reason(view)
    if view.error is not None:
        folded.error = error_message(view.error)


@dataclass(frozen=True)
class ResponsesFamily(NoUsageOption, Defaults):
    name: str = "responses"
    # Fields that say how the answer is delivered, stored or attributed, never what it is.
    ignored: tuple[str, ...] = (
        *COMMON_IGNORED,
        "stream_options",
        "store",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
    )
    end_marker: str = "response.completed, response.incomplete, response.failed or an error event"
    read_request = staticmethod(read_request)
    stream_fold = staticmethod(ResponsesStreamFold)

    def fold_body(self, body: bytes) -> Folded:
        return fold_json_body(body, RESPONSE_DECODER, _fill)

    unconvertible = staticmethod(convert.unconvertible)

    def body_to_stream(self, body: bytes, wants_usage: bool) -> list[bytes] | None:
        return convert.response_to_events(body)


RESPONSES = ResponsesFamily()
