"""The chat-completions family, and the families that share its wire format (legacy completions,
embeddings): reading requests, the usage option, folding streams and bodies, conversion for replay.

Invariants:
- A stream is complete at ``[DONE]``, or at the event in which every choice got its finish reason,
  whichever comes first; without either it is cut.
- TTFT is the first event that carries output of any kind (text, refusal, reasoning, tool-call pieces).
- Usage comes from whichever chunk carries it (a ``choices: []`` chunk, an empty-delta chunk, or the
  last content chunk as OpenRouter sends it); ``prompt_tokens`` already counts cached tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.apis.chat import convert
from proxy.apis.chat.assemble import Assembler
from proxy.apis.chat.usage_option import UsageChunkFilter, inject_usage, refuses_option
from proxy.apis.chat.wire import (
    CHUNK_DECODER,
    REQUEST_DECODER,
    RESPONSE_DECODER,
    ChatCompletionChunk,
    ResponseView,
    record_usage,
)
from proxy.apis.codec import JSON_ENCODER
from proxy.apis.errors import error_message
from proxy.apis.family import (
    COMMON_IGNORED,
    Defaults,
    Event,
    EventFold,
    Folded,
    RequestInfo,
    StreamFilter,
    decode_request,
    fold_json_body,
)


def read_request(body: bytes) -> RequestInfo | None:
    view = decode_request(body, REQUEST_DECODER)
    if view is None:
        return None
    wants = bool(view.stream_options and view.stream_options.include_usage)
    return RequestInfo(model=view.model, stream=bool(view.stream), user=view.user, wants_usage=wants)


def _fill(folded: Folded, view: ResponseView) -> None:
    folded.usage = record_usage(view.usage)
    folded.provider_cost = view.usage.cost if view.usage is not None else None
    folded.model = view.model
    if view.choices:
        folded.finish_reason = view.choices[0].finish_reason
    if view.error is not None:
        folded.error = error_message(view.error)


def fold_body(body: bytes) -> Folded:
    """A JSON response body with OpenAI's ``usage``: chat, completions, embeddings and many others."""
    return fold_json_body(body, RESPONSE_DECODER, _fill)


class ChatStreamFold(EventFold[ChatCompletionChunk, Assembler]):
    """A chat stream folded as it passes into the record's fields and the ``chat.completion`` it amounts to."""

    decoder = CHUNK_DECODER
    assembler = Assembler
    end_data = ("[DONE]", b"[DONE]")

    def step(self, event: Event, chunk: ChatCompletionChunk) -> tuple[bool, bool]:
        self.asm.add(chunk)
        return self.asm.has_output, self.asm.all_finished

    def result(self) -> Folded:
        asm, folded = self.asm, self.folded
        folded.usage = record_usage(asm.usage)
        folded.provider_cost = asm.usage.cost if asm.usage is not None else None
        folded.model = asm.model
        folded.finish_reason = asm.finish_reason
        if asm.chunks:
            folded.assembled = JSON_ENCODER.encode(asm.result())
        if asm.error is not None:
            folded.error, folded.error_event = error_message(asm.error), True
        return folded


@dataclass(frozen=True)
class ChatFamily(Defaults):
    """Chat completions (``name="chat"``) and legacy completions (``name="completions"``)."""

    name: str = "chat"
    ignored: tuple[str, ...] = (*COMMON_IGNORED, "stream_options")
    end_marker: str = "[DONE] or a finish_reason"
    read_request = staticmethod(read_request)
    stream_fold = staticmethod(ChatStreamFold)
    fold_body = staticmethod(fold_body)

    def usage_option(self, body: bytes, info: RequestInfo) -> bytes | None:
        # Usage comes on a stream only when asked for (stream_options.include_usage): the proxy asks.
        return inject_usage(body) if info.stream and not info.wants_usage else None

    def refuses_option(self, status: int, body: bytes) -> bool:
        return refuses_option(status, body)

    def hiding_filter(self, max_event_bytes: int) -> StreamFilter | None:
        return UsageChunkFilter(max_event_bytes)

    def body_to_stream(self, body: bytes, wants_usage: bool) -> list[bytes] | None:
        return convert.completion_to_events(body, wants_usage)


CHAT = ChatFamily()
COMPLETIONS = ChatFamily(name="completions")
