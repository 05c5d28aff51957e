"""The usage option: splicing it into a request, and the filter that hides the usage chunk (fast path, offsets,
boundaries)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.apis.chat.usage_option import UsageChunkFilter, inject_usage
from proxy.apis.chat.wire import USAGE_PROBE_DECODER
from proxy.apis.codec import ANY_DECODER
from proxy.apis.sse import SSEEvent, SSEParser

USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def _event(kind: str, eol: str, spaced: bool) -> tuple[bytes, bool]:
    """One event's bytes, and whether it is usage-only."""
    sep = ": " if spaced else ":"
    if kind == "comment":
        return f": OPENROUTER PROCESSING{eol}{eol}".encode(), False
    if kind == "done":
        return f"data: [DONE]{eol}{eol}".encode(), False
    choices = [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]
    if kind == "usage_only":
        choices = []
    elif kind == "usage_empty_delta":  # LiteLLM's shape
        choices = [{"index": 0, "delta": {}}]
    obj: dict[str, object] = {"id": "x", "object": "chat.completion.chunk", "choices": choices}
    if kind in ("usage_only", "usage_empty_delta", "content_with_usage"):
        obj["usage"] = USAGE
    elif kind == "content_null_usage":
        obj["usage"] = None
    body = json.dumps(obj, separators=(",", sep))
    return f"data: {body}{eol}{eol}".encode(), kind in ("usage_only", "usage_empty_delta")


KINDS = st.sampled_from(
    ["content", "content_null_usage", "content_with_usage", "usage_only", "usage_empty_delta", "comment", "done"]
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], bytes, int]:
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    spaced = draw(st.booleans())
    events = [_event(k, eol, spaced) for k in draw(st.lists(KINDS, min_size=1, max_size=12))]
    stream = b"".join(e for e, _ in events)
    expected = b"".join(e for e, usage_only in events if not usage_only)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=8))))
    # Reads on event boundaries are the common case (and the fast path): add some of those too.
    boundaries = []
    pos = 0
    for e, _ in events:
        pos += len(e)
        boundaries.append(pos)
    cuts = sorted(set(cuts + draw(st.lists(st.sampled_from(boundaries), max_size=6))))
    reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True) if b > a]
    return reads, expected, sum(1 for _, u in events if u)


class _NoSkip(SSEParser):
    __slots__ = ()

    def skip(self, data: bytes) -> bool:
        return False


def _run(f: UsageChunkFilter, reads: list[bytes]) -> list[bytes]:
    return [f.feed(r) for r in reads] + [f.close()]


def _events_only(data: bytes) -> list[str]:
    """The events a client can parse from ``data`` (comments are no events, wherever the reads cut them)."""
    return [e.data for e in SSEParser().feed(data)]


@settings(max_examples=400, deadline=None)
@given(streams())
def test_fast_path_forwards_the_same_events_never_later(case: tuple[list[bytes], bytes, int]) -> None:
    reads, expected, usage_only = case
    fast = UsageChunkFilter()
    slow = UsageChunkFilter()
    slow._parser = _NoSkip()
    fast_out, slow_out = _run(fast, reads), _run(slow, reads)
    for i in range(len(fast_out)):
        # After every read the client has had at least the events parsing every read would give it.
        sent_fast = _events_only(b"".join(fast_out[: i + 1]))
        sent_slow = _events_only(b"".join(slow_out[: i + 1]))
        assert sent_fast[: len(sent_slow)] == sent_slow
    assert _events_only(b"".join(fast_out)) == _events_only(b"".join(slow_out))
    assert fast.dropped == slow.dropped == usage_only
    stream = b"".join(reads)
    if b"PROCESSING" not in stream and b"\r" not in stream:
        assert b"".join(fast_out) == expected
    # Where they differ, the parsing path dropped a keep-alive comment read together with a usage-only
    # event (or the LF of a CRLF split right after one): an old quirk the fast path only ever avoids.


class _Counted(SSEParser):
    __slots__ = ("sizes",)

    def feed(self, data: bytes) -> list[SSEEvent]:
        self.sizes.append(len(data))
        return super().feed(data)


def test_a_read_after_one_that_cut_an_event_is_parsed_only_up_to_that_event_s_end() -> None:
    # The filter must finish the cut event with the parser; the whole events after it take the unparsed way
    # (a fast stream's reads of 64 KiB that each cut an event were otherwise parsed whole, every one).
    event = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
    stream = event * 2000
    reads = [stream[i : i + 10_007] for i in range(0, len(stream), 10_007)]
    reads.append(b'data: {"choices":[],"usage":{"total_tokens":3}}\n\ndata: [DONE]\n\n')
    f = UsageChunkFilter()
    f._parser = parser = _Counted()
    parser.sizes = []
    out = b"".join(f.feed(r) for r in reads) + f.close()
    assert out == stream + b"data: [DONE]\n\n" and f.dropped == 1
    assert max(parser.sizes[:-1]) <= len(event), parser.sizes


@settings(max_examples=300, deadline=None)
@given(streams(), st.data())
def test_skip_keeps_offsets_and_later_events_exact(case: tuple[list[bytes], bytes, int], data: st.DataObject) -> None:
    reads, _, _ = case
    full = SSEParser()
    reference = [full.feed(r) for r in reads]
    parser = SSEParser()
    for i, r in enumerate(reads):
        if data.draw(st.booleans()) and parser.skip(r):
            continue
        assert parser.feed(r) == reference[i]
    assert parser.consumed == full.consumed


def test_skip_only_at_a_boundary_and_on_a_blank_line() -> None:
    assert not SSEParser().skip(b"\xef\xbb\xbfdata: 1\n\n"), "a stream's BOM is parsed"
    assert not SSEParser().skip(b"\xefdata: 1\n\n"), "... and so is what may be one"
    assert SSEParser().skip(b"data: 1\n\n"), "a stream that opens without one starts between events"
    p = SSEParser()
    assert [e.end for e in p.feed(b"data: 1\n\n")] == [9]
    assert not p.skip(b"data: 2\n"), "does not end on a blank line"
    assert p.skip(b"data: 2\n\n") and p.consumed == 18 and p.pending == 0
    p.feed(b"data: 3\n")
    assert not p.at_boundary and not p.skip(b"\n"), "half an event is pending"
    assert [e.end for e in p.feed(b"\n")] == [27]
    p.feed(b"data: 4\r")
    assert not p.skip(b"\ndata: 5\n\n"), "a CR waits for its LF"


def test_a_run_of_skips_ends_at_the_next_feed() -> None:
    p = SSEParser()
    assert p.skip(b"data: 1\n\n") and p.skip(b"data: 2\n\n"), "skip after skip"
    p.feed(b"data: 3")
    assert not p.skip(b"\n\ndata: 4\n\n"), "half an event is pending: the run of skips is over"
    p.drop()
    assert p.skip(b"data: 5\n\n") and p.pending == 0, "a dropped event leaves the parser between events"


def test_null_usage_text_never_lets_a_usage_chunk_through() -> None:
    null = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
    for chunk in (
        b'data: {"choices":[],"a\\"usage":null,"usage":{"total_tokens":3}}\n\n',
        b'data: {"choices":[],"usage":{"total_tokens":3},"note":"\\"usage\\":null"}\n\n',
        b'data: {"choices":[],"usage":{"total_tokens":3}}\n\n',
    ):
        f = UsageChunkFilter()
        assert f.feed(null) == null and f.held == 0
        assert f.feed(null + chunk) == null and f.dropped == 1 and f.held == 0, chunk
        assert f.feed(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"


def test_usage_option_is_spliced_or_merged() -> None:
    body = b'{"model": "m", "messages": [{"content": "}"}], "stream": true}'
    assert inject_usage(body + b" \n") == body[:-1] + b',"stream_options":{"include_usage":true}}'
    merged = inject_usage(b'{"stream": true, "stream_options": {"other": 1, "include_usage": false}}')
    assert merged is not None and ANY_DECODER.decode(merged)["stream_options"] == {"other": 1, "include_usage": True}


@pytest.mark.parametrize(
    ("chunk", "usage_only"),
    [
        (b'{"choices":[],"usage":{"total_tokens":1}}', True),
        (b'{"choices":[{}],"usage":{"total_tokens":1}}', True),
        # LiteLLM's proxy: usage on one choice with an empty delta, for chat and for legacy completions.
        (b'{"choices":[{"index":0,"delta":{}}],"usage":{"total_tokens":1}}', True),
        (b'{"choices":[{"index":0,"delta":{"content":null,"tool_calls":[]}}],"usage":{"total_tokens":1}}', True),
        (b'{"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":null}],"usage":{"total_tokens":1}}', True),
        (b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"total_tokens":1}}', False),
        (b'{"choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"total_tokens":1}}', False),
        (b'{"choices":[{"index":0,"delta":{"role":"assistant"}}],"usage":{"total_tokens":1}}', False),
        (b'{"choices":[{"text":"a","index":0}],"usage":{"total_tokens":1}}', False),
        (b'{"choices":[{"index":0,"delta":{}},{"index":1,"delta":{"content":"b"}}],"usage":{"total_tokens":1}}', False),
        (b'{"choices":[{"index":0,"delta":{},"logprobs":{"content":[{"token":"a"}]}}],"usage":{}}', False),
        (b'{"choices":[],"usage":null}', False),
        (b'{"choices":null,"usage":{}}', True),
        (b'{"choices":[]}', False),
    ],
)
def test_usage_probe(chunk: bytes, usage_only: bool) -> None:
    assert USAGE_PROBE_DECODER.decode(chunk).usage_only is usage_only
