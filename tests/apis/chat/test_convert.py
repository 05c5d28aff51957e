"""A non-streamed completion turned into a stream folds back into the same completion."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from proxy.apis.chat.assemble import Assembler
from proxy.apis.chat.convert import completion_to_events
from proxy.apis.chat.wire import CHUNK_DECODER
from proxy.apis.sse import SSEParser

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "system_fingerprint": "fp_x",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there", "refusal": None, "reasoning": "hmm"},
            "logprobs": None,
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}


def fold(events: list[bytes]) -> tuple[Assembler, list[Any]]:
    parser, asm, chunks = SSEParser(), Assembler(), []
    for event in parser.feed(b"".join(events)):
        if event.data != "[DONE]":
            chunk = CHUNK_DECODER.decode(event.data)
            chunks.append(chunk)
            asm.add(chunk)
    return asm, chunks


@pytest.mark.parametrize("wants_usage", [True, False])
def test_chat_completion_round_trip(wants_usage: bool) -> None:
    events = completion_to_events(msgspec.json.encode(CHAT), wants_usage)
    assert events is not None and events[-1] == b"data: [DONE]\n\n"
    asm, chunks = fold(events)
    result = msgspec.json.decode(msgspec.json.encode(asm.result()))
    for key in ("id", "created", "model", "system_fingerprint"):
        assert result[key] == CHAT[key]
    assert result["choices"] == CHAT["choices"]
    assert (result["usage"] == CHAT["usage"]) is wants_usage
    assert chunks[-1].choices == [] if wants_usage else chunks[-1].choices


def test_legacy_text_completion() -> None:
    body = {
        "id": "c",
        "object": "text_completion",
        "model": "m",
        "choices": [{"index": 0, "text": "hi", "finish_reason": "length"}],
    }
    asm, _ = fold(completion_to_events(msgspec.json.encode(body), False) or [])
    assert asm.result()["choices"][0]["text"] == "hi" and asm.finish_reason == "length"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"object": "list", "data": []}', b'{"choices": [1]}'])
def test_other_bodies_are_not_converted(body: bytes) -> None:
    assert completion_to_events(body, True) is None
