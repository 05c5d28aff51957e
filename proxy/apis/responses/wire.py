"""Wire views of the Responses API: the ``response`` object, its ``usage``, and one streamed event.

Invariants:
- Views only (unknown fields skipped, never re-encoded); every field a server may omit or null is optional.
- ``usage`` is mapped exactly: ``input_tokens`` (cache reads and writes included) -> prompt,
  ``output_tokens`` (reasoning included) -> completion, ``input_tokens_details.cached_tokens`` ->
  cached, ``input_tokens_details.cache_write_tokens`` -> cache writes,
  ``output_tokens_details.reasoning_tokens`` -> reasoning. Images and audio endpoints report usage in
  the same naming, so the ``other`` family reads it with this view too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.record.exchange import Usage


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class ResponsesUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: InputTokensDetails | None = None
    output_tokens_details: OutputTokensDetails | None = None
    # OpenRouter reports the charged amount itself (credits == USD), on Responses as on chat.
    cost: float | None = None


class IncompleteDetails(msgspec.Struct):
    reason: str | None = None


class ResponseObject(msgspec.Struct):
    """A ``response`` object: the body of a non-streamed call, and inside the stream's lifecycle events."""

    id: str | None = None
    object: str | None = None
    model: str | None = None
    status: str | None = None
    usage: ResponsesUsage | None = None
    error: Any = None
    incomplete_details: IncompleteDetails | None = None


class StreamEvent(msgspec.Struct):
    """One streamed event: its ``type`` and the fields the fold reads; ``response`` kept raw for the record."""

    type: str | None = None
    # Raw cannot sit in a union with None; an absent field and an explicit null both read as b"null".
    response: msgspec.Raw = msgspec.Raw(b"null")
    delta: Any = None
    output_index: int | None = None
    content_index: int | None = None
    summary_index: int | None = None
    item: Any = None
    part: Any = None
    # The `error` event: its fields at the top level (OpenAI), or inside an `error` object (some servers).
    code: Any = None
    message: Any = None
    error: Any = None


class UsageOnly(msgspec.Struct):
    usage: ResponsesUsage | None = None


RESPONSE_DECODER = msgspec.json.Decoder(ResponseObject)
EVENT_DECODER = msgspec.json.Decoder(StreamEvent)
USAGE_DECODER = msgspec.json.Decoder(UsageOnly)


def record_usage(usage: ResponsesUsage | None) -> Usage:
    if usage is None:
        return Usage()
    inputs, outputs = usage.input_tokens_details, usage.output_tokens_details
    return Usage.from_provider(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        cached_tokens=inputs.cached_tokens if inputs else None,
        cache_write_tokens=inputs.cache_write_tokens if inputs else None,
        reasoning_tokens=outputs.reasoning_tokens if outputs else None,
    )
