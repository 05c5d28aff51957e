"""A non-streamed message played as a stream folds back into the same message, framed as the API frames it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.apis.family import Event, fold_stream
from proxy.apis.messages.family import MESSAGES
from proxy.apis.sse import SSEParser
from proxy.testing.fake_upstream.messages import cache_usage

MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig=="},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Paris is sunny.", "citations": [{"type": "char_location", "cited_text": "sun"}]},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 5,
        **cache_usage(read=11, five_minutes=7, one_hour=0),
        "output_tokens": 13,
        "service_tier": "standard",
    },
}


def fold(events: list[bytes]) -> Any:
    parsed = SSEParser().feed(b"".join(events))
    folded = fold_stream(MESSAGES, [Event(1.0, e.end, e.event, e.data) for e in parsed])
    return folded, parsed


def test_a_message_streamed_folds_back_into_itself() -> None:
    events = MESSAGES.body_to_stream(json.dumps(MESSAGE).encode(), False)
    assert events is not None
    folded, parsed = fold(events)
    assert json.loads(folded.assembled) == MESSAGE
    assert folded.complete_at == len(b"".join(events)) and folded.decode_errors == 0
    assert (folded.usage.prompt_tokens, folded.usage.completion_tokens, folded.usage.cached_tokens) == (23, 13, 11)
    # Every event is named, as the Anthropic SDK requires, and its name is its data's type.
    assert all(e.event == json.loads(e.data)["type"] for e in parsed)
    assert [e.event for e in parsed][:2] == ["message_start", "content_block_start"]
    assert [e.event for e in parsed][-2:] == ["message_delta", "message_stop"]
    assert json.loads(parsed[0].data)["message"]["usage"]["output_tokens"] == 0


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"type": "error", "error": {"type": "x"}}', b'{"type": "message", "content": [1]}'],
)
def test_anything_else_is_played_as_recorded(body: bytes) -> None:
    assert MESSAGES.body_to_stream(body, True) is None
