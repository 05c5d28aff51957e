"""Decoding a finished exchange: usage, model, finish reason, TTFT and outcome from raw bytes."""

from __future__ import annotations

import gzip

import msgspec
import pytest

from proxy.apis.chat.assemble import Assembler
from proxy.apis.chat.wire import CHUNK_DECODER
from proxy.apis.codec import ANY_DECODER
from proxy.record.decode import finalize
from proxy.record.exchange import Ending, Exchange, Outcome, Usage, UsageSource
from proxy.record.tap import BodyTap

ENC = msgspec.json.Encoder()


SSE = {"content-type": "text/event-stream"}


def sse(*objs: object, done: bool = True) -> bytes:
    out = b"".join(b"data: " + ENC.encode(o) + b"\n\n" for o in objs)
    return out + (b"data: [DONE]\n\n" if done else b"")


def streamed(body: bytes, reads: int = 3) -> Exchange:
    ex = Exchange(method="POST", path="/v1/chat/completions", stream=True, response_headers=dict(SSE), status=200)
    step = max(1, len(body) // reads)
    ex.stream_chunks = [(float(i), min(i + step, len(body))) for i in range(0, len(body), step)]
    ex.response_body = body
    ex.finish()
    return finalize(ex)


def test_tool_calls_without_index_and_names_in_pieces() -> None:
    asm = Assembler()
    for delta in (
        {
            "role": "assistant",
            "tool_calls": [{"id": "a", "type": "function", "function": {"name": "get_", "arguments": ""}}],
        },
        {"tool_calls": [{"index": 0, "function": {"name": "weather", "arguments": '{"x":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
    ):
        asm.add(CHUNK_DECODER.decode(ENC.encode({"choices": [{"index": 0, "delta": delta}]})))
    call = asm.result()["choices"][0]["message"]["tool_calls"][0]
    assert call == {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"x":1}'}}


def test_vllm_null_choices_and_float_created_are_tolerated() -> None:
    ex = streamed(
        sse(
            {"id": "x", "created": 1.5, "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
            {
                "id": "x",
                "model": "m",
                "choices": None,
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
            },
            {"id": "x", "choices": [{"index": 0.0, "delta": {}, "finish_reason": "stop"}], "unknown": {"kept": True}},
        )
    )
    assert ex.usage.source is UsageSource.PROVIDER and ex.usage.total_tokens == 3
    assert ex.finish_reason == "stop" and ex.outcome is Outcome.COMPLETE and ex.decode_errors == 0
    assembled = ANY_DECODER.decode(ex.assembled)
    assert assembled["choices"][0]["message"]["content"] == "hi" and assembled["created"] == 1.5
    assert b'"unknown":{"kept":true}' in ex.response_body  # the raw record keeps what the view skipped


def test_bad_chunk_is_counted_and_skipped() -> None:
    body = sse({"choices": [{"index": 0, "delta": {"content": "a"}}]})
    body = body.replace(b"data: [DONE]", b"data: {not json\n\ndata: [DONE]")
    ex = streamed(body)
    assert ex.decode_errors == 1 and ANY_DECODER.decode(ex.assembled)["choices"][0]["message"]["content"] == "a"
    assert ex.usage == Usage()


def test_truncated_stream_is_cut_not_complete() -> None:
    ex = streamed(sse({"choices": [{"index": 0, "delta": {"content": "a"}}]}, done=False))
    assert ex.outcome is Outcome.UPSTREAM_CUT and "without [DONE]" in ex.error


def test_ttft_is_the_read_with_the_first_content() -> None:
    body = b": keepalive\n\n" + sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}, done=False
    )
    first_content = sse({"choices": [{"index": 0, "delta": {"content": "x"}}]})
    ex = Exchange(method="POST", path="/v1/chat/completions", stream=True, response_headers=dict(SSE), status=200)
    ex.response_body = body + first_content
    ex.stream_chunks = [(5.0, 13), (9.0, len(body)), (42.0, len(body) + len(first_content))]
    ex.finish()
    finalize(ex)
    assert ex.ttft_ms == 42.0


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "raw-deflate"])
def test_an_encoded_body_is_recorded_decoded(encoding: str) -> None:
    import zlib

    data = b'{"usage": {"prompt_tokens": 1, "total_tokens": 1}}'
    if encoding == "raw-deflate":  # what some servers send as "deflate"
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed, encoding = packer.compress(data) + packer.flush(), "deflate"
    else:
        packed = gzip.compress(data) if "gzip" in encoding else zlib.compress(data)
    ex = Exchange(response_headers={"content-encoding": encoding}, response_body=packed, upstream_status=200)
    ex.finish()
    finalize(ex)
    assert ex.decoded_body == data and ex.usage.total_tokens == 1 and ex.response_bytes == len(data)
    assert ex.stored_response() == ({}, data)


def test_an_unknown_encoding_is_kept_as_received() -> None:
    ex = Exchange(response_headers={"content-encoding": "compress"}, response_body=b"\x1f\x9d...", upstream_status=200)
    ex.finish()
    finalize(ex)
    assert ex.stored_response() == ({"content-encoding": "compress"}, b"\x1f\x9d...")
    assert ex.outcome is Outcome.COMPLETE


def test_non_json_body_leaves_fields_empty() -> None:
    ex = Exchange(response_headers={"content-type": "text/html"}, response_body=b"<html>bad gateway</html>")
    ex.finish()
    finalize(ex)
    assert ex.usage == Usage() and ex.decode_errors == 0


JSON_BODY = b'{"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}'


def passed_on(body: bytes, ending: Ending, headers: dict[str, str], path: str = "/v1/chat/completions") -> Exchange:
    """``body`` fed to a tap in reads, every one passed on to the client, then ended as ``ending``."""
    ex = Exchange(method="POST", path=path, response_headers=headers, status=200, upstream_status=200)
    tap = ex.body_tap = BodyTap(ex, cap=1 << 20, event_limit=1 << 20, events=headers == SSE)
    for i in range(0, len(body), 20):
        tap.feed(body[i : i + 20])
    ex.delivered = tap.total  # every byte that came reached the client: it left (or was cut) between reads
    ex.finish(ending, None if ending is Ending.BODY_END else "ended early")
    return finalize(ex)


@pytest.mark.parametrize(
    ("ending", "outcome", "status"),
    [
        (Ending.CLIENT_LEFT, Outcome.CLIENT_DISCONNECTED, 499),
        (Ending.UPSTREAM_CUT, Outcome.UPSTREAM_CUT, 200),
        (Ending.UPSTREAM_TIMEOUT, Outcome.UPSTREAM_TIMEOUT, 200),
        (Ending.BODY_END, Outcome.COMPLETE, 200),
    ],
)
def test_a_body_without_an_end_marker_is_complete_only_if_all_of_it_came(
    ending: Ending, outcome: Outcome, status: int
) -> None:
    """A chunked JSON or text body: all of it that came reached the client, but only its end says it was all."""
    for body, headers in ((JSON_BODY, {"content-type": "application/json"}), (b"plain text " * 9, {})):
        ex = passed_on(body, ending, headers)
        assert (ex.outcome, ex.status) == (outcome, status), headers
        assert ex.response_body == body and ex.response_bytes == len(body)


def test_a_body_whose_declared_length_came_is_complete_whoever_left_after() -> None:
    declared = {"content-type": "application/json", "content-length": str(len(JSON_BODY))}
    assert passed_on(JSON_BODY, Ending.CLIENT_LEFT, declared).outcome is Outcome.COMPLETE
    short = {**declared, "content-length": str(len(JSON_BODY) + 1)}
    assert passed_on(JSON_BODY, Ending.CLIENT_LEFT, short).outcome is Outcome.CLIENT_DISCONNECTED


def test_a_body_the_client_left_before_any_of_it_came_is_not_complete() -> None:
    """Headers came (the body's length too), then the client left while the proxy read the body whole."""
    ex = passed_on(b"", Ending.CLIENT_LEFT, {"content-type": "application/json", "content-length": "120"})
    assert (ex.outcome, ex.status) == (Outcome.CLIENT_DISCONNECTED, 499)


def test_a_plain_familys_event_stream_is_complete_only_if_its_body_ended() -> None:
    """Speech as SSE: no end event of its own, so the last event passed on says nothing about the end."""
    body = b"data: " + ENC.encode({"type": "speech.audio.delta", "audio": "AAAA"}) + b"\n\n"
    assert passed_on(body, Ending.CLIENT_LEFT, dict(SSE), "/v1/audio/speech").outcome is Outcome.CLIENT_DISCONNECTED
    assert passed_on(body, Ending.BODY_END, dict(SSE), "/v1/audio/speech").outcome is Outcome.COMPLETE
