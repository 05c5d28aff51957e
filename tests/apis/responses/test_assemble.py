"""Folding Responses events: the terminal event's response as sent, or a cut stream rebuilt from its deltas."""

from __future__ import annotations

import json
from typing import Any

from proxy.apis.family import NO_TEXT_LIMIT
from proxy.apis.responses.assemble import Assembler, produces_output
from proxy.apis.responses.wire import EVENT_DECODER

BASE = {"id": "resp_1", "object": "response", "status": "in_progress", "model": "m", "output": [], "usage": None}


def add_all(events: list[dict[str, Any]]) -> Assembler:
    asm = Assembler(NO_TEXT_LIMIT)
    for event in events:
        asm.add(event["type"], EVENT_DECODER.decode(json.dumps(event)))
    return asm


def test_the_terminal_events_response_is_the_assembly_byte_for_byte() -> None:
    final = '{"id": "resp_1", "object": "response", "status": "completed", "output": [], "usage": {"input_tokens": 1}}'
    asm = Assembler(NO_TEXT_LIMIT)
    asm.add("response.created", EVENT_DECODER.decode(json.dumps({"type": "response.created", "response": BASE})))
    asm.add("response.completed", EVENT_DECODER.decode('{"type": "response.completed", "response": ' + final + "}"))
    assert asm.result() == final.encode() and asm.terminal == "response.completed"


def test_a_cut_stream_keeps_what_was_generated() -> None:
    message = {"type": "message", "id": "msg_1", "role": "assistant", "content": []}
    call = {"type": "function_call", "id": "fc_1", "name": "f", "arguments": ""}
    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    asm = add_all(
        [
            {"type": "response.created", "response": BASE},
            {"type": "response.output_item.added", "output_index": 0, "item": message},
            {"type": "response.content_part.added", **at, "part": {"type": "output_text", "text": ""}},
            {"type": "response.output_text.delta", **at, "delta": "Hel"},
            {"type": "response.output_text.delta", **at, "delta": "lo"},
            {"type": "response.output_item.added", "output_index": 1, "item": call},
            {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": '{"a":'},
        ]
    )
    result = json.loads(asm.result() or b"")
    assert result["status"] == "in_progress" and asm.terminal is None
    assert result["output"][0]["content"] == [{"type": "output_text", "text": "Hello"}]
    assert result["output"][1]["arguments"] == '{"a":'


def test_hostile_indexes_and_types_are_skipped() -> None:
    asm = add_all(
        [
            {"type": "response.output_text.delta", "output_index": -1, "content_index": 0, "delta": "x"},
            {"type": "response.output_text.delta", "output_index": 0, "content_index": 10**9, "delta": "x"},
            {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": 5},
            {"type": "response.output_item.added", "output_index": 0, "item": "not an item"},
            {"type": "response.created", "response": "not a response"},
        ]
    )
    assert asm.result() is not None and asm.usage is None


def test_output_of_any_kind_counts_for_ttft() -> None:
    def output(kind: str, delta: Any = None) -> bool:
        return produces_output(kind, EVENT_DECODER.decode(json.dumps({"type": kind, "delta": delta})))

    assert output("response.output_text.delta", "a") and output("response.reasoning_summary_text.delta", "a")
    assert output("response.function_call_arguments.delta", "{") and output("response.output_item.done")
    assert not output("response.output_text.delta", "") and not output("response.created")
    assert not output("response.content_part.added") and not output("response.output_item.added")
