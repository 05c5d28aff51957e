"""Families without a stream protocol of their own that the proxy knows: embeddings, and ``other``
(models, files, images, audio, batches, moderations, ...).

Invariants:
- Forwarded and recorded like any other; usage is read where the body has OpenAI's ``usage`` shape.
- A complete response is never an error: a stream of such a family is complete when its body ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.apis.chat.family import fold_body, read_request
from proxy.apis.errors import openai_error_body
from proxy.apis.family import COMMON_IGNORED, Event, Folded, RequestInfo, StreamFilter, StreamFold


@dataclass(frozen=True)
class PlainFamily:
    name: str = "other"
    ignored: tuple[str, ...] = COMMON_IGNORED
    end_marker: str = "the end of its body"
    error_body = staticmethod(openai_error_body)

    def read_request(self, body: bytes) -> RequestInfo | None:
        return read_request(body)

    def usage_option(self, body: bytes, info: RequestInfo) -> bytes | None:
        return None

    def refuses_option(self, status: int, body: bytes) -> bool:
        return False

    def hiding_filter(self, max_event_bytes: int) -> StreamFilter | None:
        return None

    def stream_fold(self, text_limit: int) -> StreamFold:
        return _PlainFold()

    def fold_body(self, body: bytes) -> Folded:
        return fold_body(body)

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

    def result(self) -> Folded:
        return self.folded


EMBEDDINGS = PlainFamily(name="embeddings")
OTHER = PlainFamily()
