"""Wire views of the Messages API: the parts of requests, responses and stream events the proxy reads.

Invariants:
- Views only: unknown fields are skipped, a decoded Struct is never re-encoded onto the wire or into
  storage. Fields a server may omit or send as null are ``T | None = None``.
- Usage is mapped exactly (``record_usage``): Anthropic's ``input_tokens`` excludes cache tokens, so the
  record's ``prompt_tokens`` is ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``;
  ``cached_tokens`` the cache reads; ``cache_write_tokens`` the cache writes, of which
  ``cache_creation.ephemeral_1h_input_tokens`` had a 1-hour lifetime; ``reasoning_tokens`` the
  ``output_tokens_details.thinking_tokens``. Messages reports no total: it is the sum of the two sides.
- A stream's usage is the last value of each field (``merge_usage``), never a sum: ``message_start``
  carries the input side, each ``message_delta`` cumulative counts.
- Decoders are module constants, built once.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.record.exchange import Usage


class Metadata(msgspec.Struct):
    user_id: str | None = None


class RequestView(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None
    metadata: Metadata | None = None


class CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class OutputTokensDetails(msgspec.Struct):
    thinking_tokens: int | None = None


class MessagesUsage(msgspec.Struct):
    """``usage`` of a message, a ``message_start`` event's message, or a ``message_delta`` event."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_creation: CacheCreation | None = None
    output_tokens_details: OutputTokensDetails | None = None


class MessageView(msgspec.Struct):
    """A non-streamed response body: a ``message``, or an ``error`` (``{"type": "error", "error": {...}}``)."""

    type: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    usage: MessagesUsage | None = None
    error: Any = None


class StreamEvent(msgspec.Struct):
    """One event's data. Objects the assembly keeps whole stay plain Python values."""

    type: str | None = None
    index: int | None = None
    message: dict[str, Any] | None = None  # message_start
    content_block: dict[str, Any] | None = None  # content_block_start
    delta: dict[str, Any] | None = None  # content_block_delta, message_delta
    usage: dict[str, Any] | None = None  # message_delta
    error: Any = None  # error


REQUEST_DECODER = msgspec.json.Decoder(RequestView)
MESSAGE_DECODER = msgspec.json.Decoder(MessageView)
EVENT_DECODER = msgspec.json.Decoder(StreamEvent)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid(key: str, value: Any) -> bool:
    """A usage field the typed view can read: counts are integers, breakdowns objects of integers."""
    if key.endswith("_tokens"):
        return _count(value)
    if key in _BREAKDOWNS:
        return isinstance(value, dict) and all(_count(v) or v is None for v in value.values())
    return True


_BREAKDOWNS = ("cache_creation", "output_tokens_details")


def merge_usage(into: dict[str, Any], later: Any) -> int:
    """Each field of a later usage object replaces the earlier value (counts are cumulative); nulls do not.

    Returns how many fields were refused as unreadable (a count that is no integer): they are skipped,
    so one bad field never loses the others.
    """
    if not isinstance(later, dict):
        return 0 if later is None else 1
    refused = 0
    for key, value in later.items():
        if value is None:
            continue
        if _valid(key, value):
            into[key] = value
        else:
            refused += 1
    return refused


def usage_view(usage: dict[str, Any] | None) -> MessagesUsage | None:
    """The typed view of a usage object; None when it is absent or not usage-shaped."""
    if not usage:
        return None
    try:
        return msgspec.convert(usage, MessagesUsage)
    except msgspec.ValidationError:
        return None


def _sum(*counts: int | None) -> int | None:
    present = [c for c in counts if c is not None]
    return sum(present) if present else None


def record_usage(usage: MessagesUsage | None) -> Usage:
    """The record's token counts from a Messages ``usage`` (see the module docstring for the mapping)."""
    if usage is None:
        return Usage()
    created = usage.cache_creation
    written = usage.cache_creation_input_tokens
    if written is None and created is not None:
        written = _sum(created.ephemeral_5m_input_tokens, created.ephemeral_1h_input_tokens)
    prompt = _sum(usage.input_tokens, usage.cache_read_input_tokens, written)
    details = usage.output_tokens_details
    return Usage.from_provider(
        prompt_tokens=prompt,
        completion_tokens=usage.output_tokens,
        total_tokens=prompt + usage.output_tokens if prompt is not None and usage.output_tokens is not None else None,
        cached_tokens=usage.cache_read_input_tokens,
        reasoning_tokens=details.thinking_tokens if details is not None else None,
        cache_write_tokens=written,
        cache_write_1h_tokens=created.ephemeral_1h_input_tokens if created is not None else None,
    )
