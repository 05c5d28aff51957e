"""Families without a stream protocol of their own that the proxy knows: embeddings, and ``other``
(models, files, images, audio, batches, moderations, ...).

Invariants:
- Forwarded and recorded like any other; usage is read where the body has OpenAI's ``usage`` in either
  naming: chat's (``prompt_tokens``, embeddings) or the Responses one (``input_tokens``: images, audio).
- A complete response is never an error: a stream of such a family is complete when its body ends, and
  its usage is the last event's that carries one (speech and transcription streams).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.apis.chat.family import fold_body, read_request
from proxy.apis.codec import DECODE_ERRORS
from proxy.apis.family import Defaults, Event, Folded, NoUsageOption, StreamFold
from proxy.apis.responses.wire import USAGE_DECODER, record_usage
from proxy.record.exchange import Usage


def _usage(body: bytes) -> Usage | None:
    """``usage`` in the Responses naming (``input_tokens``: images, audio), when the body has it."""
    if b'"input_tokens"' not in body:
        return None
    try:
        view = USAGE_DECODER.decode(body)
    except DECODE_ERRORS:
        return None
    return record_usage(view.usage) if view.usage is not None else None


@dataclass(frozen=True)
class PlainFamily(NoUsageOption, Defaults):
    name: str = "other"
    end_marker: str = "the end of its body"
    end_event: bool = False
    read_request = staticmethod(read_request)

    def stream_fold(self, text_limit: int) -> StreamFold:
        return _PlainFold()

    def fold_body(self, body: bytes) -> Folded:
        folded = fold_body(body)
        usage = folded.usage
        if usage.prompt_tokens is None and usage.completion_tokens is None:
            folded.usage = _usage(body) or usage
        return folded

    def body_to_stream(self, body: bytes, wants_usage: bool) -> list[bytes] | None:
        return None


class _PlainFold:
    def __init__(self) -> None:
        self.folded = Folded(complete_at=0)

    def feed(self, events: Iterable[Event]) -> None:
        folded = self.folded
        for event in events:
            folded.events += 1
            folded.complete_at = event.end  # no end marker known: whole when its last event is
            data = event.data.encode() if isinstance(event.data, str) else event.data
            if b'"usage"' in data:  # speech and transcription streams end with an event carrying usage
                usage = _usage(data)
                if usage is not None:
                    folded.usage = usage

    def result(self) -> Folded:
        return self.folded


EMBEDDINGS = PlainFamily(name="embeddings")
OTHER = PlainFamily()
