"""A recorded response played as a stream folds back into the same response; unfinished ones are not played."""

from __future__ import annotations

import json

import pytest

from proxy.apis.responses.convert import response_to_events
from proxy.apis.responses.family import RESPONSES
from proxy.apis.sse import SSEParser
from proxy.record.exchange import Outcome
from tests.support.folding import finished_stream

RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "model": "gpt-5",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Thinking."}]},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "Hi there", "annotations": []},
                {"type": "refusal", "refusal": "no"},
            ],
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "c1",
            "name": "f",
            "arguments": '{"a": 1}',
            "status": "completed",
        },
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ],
    "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
}


def test_events_fold_back_into_the_recorded_response() -> None:
    body = json.dumps(RESPONSE).encode()
    events = response_to_events(body)
    assert events is not None
    stream = b"".join(events)
    parsed = SSEParser().feed(stream)
    assert [json.loads(e.data)["sequence_number"] for e in parsed] == list(range(len(parsed)))
    assert all(e.event == json.loads(e.data)["type"] for e in parsed)
    assert parsed[0].event == "response.created" and json.loads(parsed[0].data)["response"]["output"] == []
    ex = finished_stream("/v1/responses", stream)
    assert ex.outcome is Outcome.COMPLETE and json.loads(ex.assembled or b"") == RESPONSE
    assert (ex.usage.prompt_tokens, ex.usage.completion_tokens, ex.finish_reason) == (5, 7, "completed")
    deltas = [json.loads(e.data)["delta"] for e in parsed if e.event.endswith(".delta")]
    assert deltas == ["Thinking.", "Hi there", "no", '{"a": 1}']


@pytest.mark.parametrize(
    ("status", "terminal"),
    [("completed", "response.completed"), ("incomplete", "response.incomplete"), ("failed", "response.failed")],
)
def test_the_terminal_event_follows_the_status(status: str, terminal: str) -> None:
    events = response_to_events(json.dumps({**RESPONSE, "status": status}).encode())
    assert events is not None and events[-1].startswith(b"event: " + terminal.encode() + b"\n")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (json.dumps({**RESPONSE, "status": "queued"}).encode(), "status is 'queued': it had not finished"),
        (json.dumps({**RESPONSE, "status": "in_progress"}).encode(), "status is 'in_progress': it had not finished"),
        (json.dumps({**RESPONSE, "status": "cancelled"}).encode(), "'cancelled': a stream ends only as completed,"),
        (json.dumps({"error": {"message": "nope"}}).encode(), "not a Responses object with an output list"),
        (json.dumps({**RESPONSE, "output": ["not an item"]}).encode(), "an output item of the recorded response"),
        (b"not json", "not a Responses object"),
    ],
)
def test_what_is_not_a_finished_response_is_not_converted_and_says_why(body: bytes, why: str) -> None:
    assert RESPONSES.body_to_stream(body, False) is None
    problem = RESPONSES.unconvertible(body)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize("status", ["completed", "incomplete", "failed"])
def test_a_finished_response_is_convertible(status: str) -> None:
    assert RESPONSES.unconvertible(json.dumps({**RESPONSE, "status": status}).encode()) is None
