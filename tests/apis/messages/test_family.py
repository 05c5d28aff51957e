"""The Messages family folds streams and bodies as the Messages streaming reference describes them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.apis.families import family_for
from proxy.apis.family import Event, fold_stream
from proxy.apis.messages.family import MESSAGES
from proxy.apis.sse import SSEParser
from proxy.record.decode import finalize
from proxy.record.exchange import Ending, Exchange, Outcome, UsageSource
from proxy.testing.fake_upstream.messages import CACHE_USAGE

START_USAGE = {"input_tokens": 12, **CACHE_USAGE, "output_tokens": 1, "service_tier": "standard"}
MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": START_USAGE,
    },
}
TOOL = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}


def start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}}


def stop(index: int) -> tuple[str, dict[str, Any]]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def message_delta(reason: str | None, **usage: Any) -> tuple[str, dict[str, Any]]:
    return "message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": None},
        "usage": usage,
    }


PING = ("ping", {"type": "ping"})
# (sse event name, data): thinking with its signature, text, a tool use whose input arrives in pieces,
# pings between, two message_delta events whose output counts are cumulative (20, then 57).
REFERENCE: list[tuple[str, dict[str, Any]]] = [
    ("message_start", MESSAGE_START),
    PING,
    start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    delta(0, "thinking_delta", thinking="Let me "),
    delta(0, "thinking_delta", thinking="think."),
    delta(0, "signature_delta", signature="EqQBCgIYAhIM"),
    stop(0),
    start(1, {"type": "text", "text": ""}),
    delta(1, "text_delta", text="Checking "),
    delta(1, "text_delta", text="the weather."),
    stop(1),
    PING,
    start(2, TOOL),
    delta(2, "input_json_delta", partial_json=""),
    delta(2, "input_json_delta", partial_json='{"city": "Pa'),
    delta(2, "input_json_delta", partial_json='ris"}'),
    stop(2),
    message_delta(None, output_tokens=20),
    message_delta("tool_use", output_tokens=57),
    ("message_stop", {"type": "message_stop"}),
]
ASSEMBLED = {
    **MESSAGE_START["message"],
    "content": [
        {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIYAhIM"},
        {"type": "text", "text": "Checking the weather."},
        {**TOOL, "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "usage": {**START_USAGE, "output_tokens": 57},
}


def sse(events: list[tuple[str, dict[str, Any]]], *, named: bool = True) -> bytes:
    out = b""
    for name, data in events:
        out += (f"event: {name}\n" if named else "").encode() + b"data: " + json.dumps(data).encode() + b"\n\n"
    return out


def folded_events(body: bytes) -> list[Event]:
    """One event per read, read k at ``k`` ms."""
    return [Event(float(k), e.end, e.event, e.data) for k, e in enumerate(SSEParser().feed(body))]


def stream_exchange(body: bytes, ending: Ending = Ending.BODY_END, delivered: int | None = None) -> Exchange:
    ex = Exchange(method="POST", path="/v1/messages", stream=True, upstream_status=200, status=200)
    ex.response_headers = {"content-type": "text/event-stream"}
    ex.response_body, ex.stream_chunks = body, [(5.0, len(body))]
    ex.delivered = len(body) if delivered is None else delivered
    ex.finish(ending)
    return finalize(ex)


def test_messages_speaks_on_v1_messages() -> None:
    assert family_for("POST", "/v1/messages") is MESSAGES
    assert family_for("POST", "/v1/messages/count_tokens").name == "other"


def test_a_reference_stream_folds_into_the_message_a_plain_call_returns() -> None:
    body = sse(REFERENCE)
    folded = fold_stream(MESSAGES, folded_events(body))
    assert json.loads(folded.assembled or b"") == ASSEMBLED
    assert folded.complete_at == len(body)
    assert folded.finish_reason == "tool_use" and folded.model == "claude-sonnet-4-5-20250929"
    assert folded.events == len(REFERENCE) and folded.decode_errors == 0 and folded.error is None
    # The first output is the first thinking_delta (event 3): not the ping, not the empty block's start.
    assert folded.ttft_ms == 3.0


def test_usage_counts_cache_tokens_into_the_prompt_and_takes_the_last_output_count() -> None:
    usage = fold_stream(MESSAGES, folded_events(sse(REFERENCE))).usage
    assert usage.source is UsageSource.PROVIDER
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12 + 2000 + 300, 57, 2369)
    assert (usage.cached_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == (2000, 300, 100)
    assert usage.reasoning_tokens is None  # not reported


def test_a_later_message_delta_s_input_counts_replace_the_start_s() -> None:
    later = {"input_tokens": 15, "cache_read_input_tokens": 2100, "output_tokens": 9}
    delta = ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": later})
    events = [REFERENCE[0], delta, ("message_delta", {**delta[1], "usage": {"output_tokens": 11}}), REFERENCE[-1]]
    usage = fold_stream(MESSAGES, folded_events(sse(events))).usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (15 + 2100 + 300, 2100, 11)


def test_thinking_tokens_are_the_reasoning_tokens() -> None:
    usage = {"output_tokens": 40, "output_tokens_details": {"thinking_tokens": 25}}
    events = [REFERENCE[0], ("message_delta", {"type": "message_delta", "delta": {}, "usage": usage})]
    folded = fold_stream(MESSAGES, folded_events(sse(events)))
    assert (folded.usage.completion_tokens, folded.usage.reasoning_tokens) == (40, 25)


def test_events_without_event_lines_fold_by_their_type() -> None:
    folded = fold_stream(MESSAGES, folded_events(sse(REFERENCE, named=False)))
    assert json.loads(folded.assembled or b"") == ASSEMBLED and folded.complete_at is not None


def test_a_tool_use_block_is_output_when_it_starts() -> None:
    events = [REFERENCE[0], REFERENCE[1], *REFERENCE[12:]]
    assert fold_stream(MESSAGES, folded_events(sse(events))).ttft_ms == 2.0


def test_a_stream_without_message_stop_is_cut_with_the_input_side_it_had() -> None:
    ex = stream_exchange(sse(REFERENCE[:9]))
    assert ex.outcome is Outcome.UPSTREAM_CUT and ex.error == "stream ended without message_stop"
    assert (ex.usage.prompt_tokens, ex.usage.completion_tokens, ex.usage.cache_write_1h_tokens) == (2312, 1, 100)
    assert json.loads(ex.assembled or b"")["content"][1] == {"type": "text", "text": "Checking "}


def test_a_stream_cut_inside_the_tool_input_keeps_the_input_it_started_with() -> None:
    folded = fold_stream(MESSAGES, folded_events(sse(REFERENCE[:15])))
    assert json.loads(folded.assembled or b"")["content"][2] == TOOL


def test_a_client_that_left_after_message_stop_got_the_whole_message() -> None:
    body = sse(REFERENCE)
    ex = stream_exchange(body, Ending.CLIENT_LEFT, delivered=len(body))
    assert ex.outcome is Outcome.COMPLETE and ex.status == 200


def test_a_client_that_left_mid_stream_is_499_with_the_input_tokens_of_message_start() -> None:
    body = sse(REFERENCE)
    ex = stream_exchange(body[: body.index(b"event: content_block_start")], Ending.CLIENT_LEFT, delivered=100)
    assert ex.outcome is Outcome.CLIENT_DISCONNECTED and ex.status == 499
    assert (ex.usage.prompt_tokens, ex.usage.cached_tokens, ex.usage.completion_tokens) == (2312, 2000, 1)


def test_an_error_event_is_the_stream_s_outcome() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    ex = stream_exchange(sse([*REFERENCE[:9], ("error", error)]))
    assert ex.outcome is Outcome.UPSTREAM_ERROR_EVENT and ex.error == "Overloaded" and ex.status == 200
    assert ex.usage.prompt_tokens == 2312


def test_a_complete_stream_is_complete() -> None:
    ex = stream_exchange(sse(REFERENCE))
    assert ex.outcome is Outcome.COMPLETE and ex.error is None and ex.ttft_ms == 5.0
    assert ex.usage.completion_tokens == 57 and ex.finish_reason == "tool_use"


@pytest.mark.parametrize(
    "data", [b"not json", b"[1, 2]", b'{"type": "message_delta", "usage": {"output_tokens": "many"}}', b"\xff"]
)
def test_an_undecodable_event_is_counted_and_skipped(data: bytes) -> None:
    body = sse(REFERENCE[:1]) + b"event: x\ndata: " + data + b"\n\n" + sse(REFERENCE[-1:])
    folded = fold_stream(MESSAGES, folded_events(body))
    assert folded.complete_at == len(body) and folded.usage.prompt_tokens == 2312
    assert folded.decode_errors == 1


def test_a_non_streamed_message_is_read_like_a_stream() -> None:
    body = json.dumps(ASSEMBLED).encode()
    folded = MESSAGES.fold_body(body)
    assert (folded.usage.prompt_tokens, folded.usage.completion_tokens) == (2312, 57)
    assert (folded.usage.cached_tokens, folded.usage.cache_write_tokens, folded.usage.cache_write_1h_tokens) == (
        2000,
        300,
        100,
    )
    assert folded.model == "claude-sonnet-4-5-20250929" and folded.finish_reason == "tool_use"


def test_cache_writes_without_their_total_are_the_sum_of_their_lifetimes() -> None:
    usage = {
        "input_tokens": 3,
        "output_tokens": 4,
        "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 6},
    }
    folded = MESSAGES.fold_body(json.dumps({"type": "message", "usage": usage}).encode())
    assert (folded.usage.prompt_tokens, folded.usage.cache_write_tokens, folded.usage.cache_write_1h_tokens) == (
        14,
        11,
        6,
    )


def test_an_error_body_says_its_message() -> None:
    body = b'{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"},"request_id":"req_1"}'
    folded = MESSAGES.fold_body(body)
    assert folded.error == "model: claude-x" and folded.usage.source is UsageSource.MISSING


def test_the_request_names_model_stream_and_user() -> None:
    info = MESSAGES.read_request(b'{"model": "claude-haiku-4-5", "stream": true, "metadata": {"user_id": "u-7"}}')
    assert info is not None and (info.model, info.stream, info.user, info.wants_usage) == (
        "claude-haiku-4-5",
        True,
        "u-7",
        False,
    )
    assert MESSAGES.read_request(b'{"model": "m", "metadata": "not an object"}') is None
    assert MESSAGES.usage_option(b'{"stream": true}', info) is None and MESSAGES.hiding_filter(1 << 20) is None


def test_proxy_errors_take_anthropic_s_shape() -> None:
    body = json.loads(MESSAGES.error_body(502, "upstream unreachable", "proxy_error", "upstream_unreachable"))
    assert body == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream unreachable", "code": "upstream_unreachable"},
    }
    assert (
        json.loads(MESSAGES.error_body(504, "slow", "proxy_error", "upstream_timeout"))["error"]["type"]
        == "timeout_error"
    )
    assert (
        json.loads(MESSAGES.error_body(404, "miss", "replay_miss", "replay_miss"))["error"]["type"] == "not_found_error"
    )
    assert json.loads(MESSAGES.error_body(413, "big", "invalid_request_error"))["error"]["type"] == "request_too_large"
