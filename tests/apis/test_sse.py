"""Tests for proxy.apis.sse: worked examples plus properties that pin down split-independence."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.apis.sse import SSEEvent, SSEParser

BOM = b"\xef\xbb\xbf"


def feed_all(chunks: Iterable[bytes]) -> tuple[SSEParser, list[SSEEvent]]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return parser, events


def parse(stream: bytes) -> list[SSEEvent]:
    return feed_all([stream])[1]


def split_at(stream: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def triples(events: Sequence[SSEEvent]) -> list[tuple[str, str, str | None]]:
    return [(e.data, e.event, e.id) for e in events]


# --- examples ---------------------------------------------------------------------------------------


def test_openai_stream() -> None:
    stream = (
        b'data: {"id":"c1","choices":[{"delta":{"content":"Hi"}}]}\n\n'
        b'data: {"id":"c1","choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    events = parse(stream)
    assert [e.data for e in events] == [
        '{"id":"c1","choices":[{"delta":{"content":"Hi"}}]}',
        '{"id":"c1","choices":[{"delta":{},"finish_reason":"stop"}]}',
        "[DONE]",
    ]
    assert all(e.event == "" and e.id is None for e in events)
    assert events[-1].end == len(stream)


def test_openrouter_comments_are_counted_not_dispatched() -> None:
    stream = b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\ndata: {}\n\n:\n"
    parser, events = feed_all([stream])
    assert triples(events) == [("{}", "", None)]
    assert parser.comments == 3


def test_multiline_data_event_and_id() -> None:
    events = parse(b"event: delta\nid: 7\ndata: line one\ndata: line two\ndata:\n\n")
    assert triples(events) == [("line one\nline two\n", "delta", "7")]


def test_event_field_is_raw_and_per_event() -> None:
    events = parse(b"event: error\ndata: a\n\ndata: b\n\n")
    assert triples(events) == [("a", "error", None), ("b", "", None)]


def test_id_is_per_event_and_last_wins_and_nul_ignored() -> None:
    events = parse(b"id: 1\nid: 2\nid: 3\x004\ndata: a\n\ndata: b\n\nid:\ndata: c\n\n")
    assert triples(events) == [("a", "", "2"), ("b", "", None), ("c", "", "")]


def test_crlf_and_cr_line_endings() -> None:
    crlf = b"event: x\r\ndata: a\r\ndata: b\r\n\r\n"
    cr = b"event: x\rdata: a\rdata: b\r\r"
    assert triples(parse(crlf)) == triples(parse(cr)) == [("a\nb", "x", None)]
    assert parse(crlf)[0].end == len(crlf)
    assert parse(cr)[0].end == len(cr)


def test_cr_at_feed_end_dispatches_at_once_and_skips_following_lf() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\n\r") == [SSEEvent("a", "", None, 10)]
    # The LF completes the CRLF, it is not an extra (empty) line.
    assert parser.feed(b"\ndata: b\n\n") == [SSEEvent("b", "", None, 20)]
    assert parser.pending == 0


def test_split_crlf_end_points_past_cr_but_pending_counts_the_lf() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\n\r") == [SSEEvent("a", "", None, 10)]
    assert parser.pending == 0
    assert parser.feed(b"\n") == []
    assert parser.pending == 0
    assert parser.consumed == 11


def test_bom_stripped_once_even_when_split() -> None:
    stream = BOM + b"data: a\n\n"
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            events = feed_all(split_at(stream, [i, j]))[1]
            assert events == [SSEEvent("a", "", None, len(stream))]
    # Only one: a second BOM is part of the field name, so the line is an unknown field.
    assert parse(BOM + BOM + b"data: a\n\n") == []
    # A BOM prefix that turns out not to be a BOM is kept as data.
    assert parse(b"data: \xef\xbb\n\n")[0].data == "\ufffd"


def test_colon_space_rules() -> None:
    events = parse(b"data:nospace\n\ndata: one\n\ndata:  two\n\ndata:a:b: c\n\n")
    assert [e.data for e in events] == ["nospace", "one", " two", "a:b: c"]


def test_line_without_colon_is_field_with_empty_value() -> None:
    assert triples(parse(b"data\n\n")) == [("", "", None)]
    assert triples(parse(b"data\ndata\n\n")) == [("\n", "", None)]
    assert triples(parse(b"event\ndata: x\n\n")) == [("x", "", None)]


def test_empty_data_field_dispatches_empty_string() -> None:
    assert triples(parse(b"data:\n\n")) == [("", "", None)]


def test_blank_line_without_data_dispatches_nothing_and_resets() -> None:
    assert parse(b"event: e\nid: 1\n\ndata: x\n\n") == [SSEEvent("x", "", None, 25)]
    assert parse(b"\n\n\n") == []


def test_unknown_fields_and_retry_ignored() -> None:
    assert triples(parse(b"retry: 1000\nfoo: bar\nDATA: no\ndata: yes\n\n")) == [("yes", "", None)]


def test_incomplete_event_at_eof_discarded() -> None:
    parser, events = feed_all([b"data: a\n\ndata: b\n", b"data: c"])
    assert triples(events) == [("a", "", None)]
    assert parser.pending == len(b"data: b\ndata: c")
    assert parser.close() == []


def test_multibyte_utf8_split_across_feeds() -> None:
    stream = "data: héllo 🌍\n\n".encode()
    for i in range(len(stream) + 1):
        events = feed_all(split_at(stream, [i]))[1]
        assert events == [SSEEvent("héllo 🌍", "", None, len(stream))]
    assert triples(feed_all([bytes([b]) for b in stream])[1]) == [("héllo 🌍", "", None)]


def test_invalid_utf8_replaced() -> None:
    assert parse(b"data: \xff\xe2\x82\ndata: ok\n\n")[0].data == "\ufffd\ufffd\nok"


def test_end_offsets_slice_the_stream_at_blank_lines() -> None:
    stream = b": hi\n\ndata: a\n\nevent: x\r\ndata: b\r\n\r\ndata: c\r\r"
    events = parse(stream)
    assert triples(events) == [("a", "", None), ("b", "x", None), ("c", "", None)]
    ends = [e.end for e in events]
    assert ends == [15, 36, len(stream)]
    assert stream[: ends[0]].endswith(b"a\n\n")
    assert stream[: ends[1]].endswith(b"b\r\n\r\n")
    assert stream[: ends[2]].endswith(b"c\r\r")


def test_consumed_and_pending() -> None:
    parser = SSEParser()
    parser.feed(b"data: a\n\nda")
    assert (parser.consumed, parser.pending) == (11, 2)
    parser.feed(b"ta: b\n")
    assert (parser.consumed, parser.pending) == (17, 8)
    parser.feed(b"\n")
    assert (parser.consumed, parser.pending) == (18, 0)


def test_long_line_in_many_small_reads() -> None:
    payload = b"x" * 100_000
    stream = b"data: " + payload + b"\n\n"
    events = feed_all(split_at(stream, range(0, len(stream), 7)))[1]
    assert events == [SSEEvent(payload.decode(), "", None, len(stream))]


def test_empty_feed_is_noop() -> None:
    parser = SSEParser()
    assert parser.feed(b"") == []
    assert parser.feed(b"data: a\n\n") == [SSEEvent("a", "", None, 9)]


# --- property: generated well-formed streams ---------------------------------------------------------

LINE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])


@dataclass
class Expected:
    data: str
    event: str
    id: str | None
    end: int
    crlf: bool  # the dispatching blank line ended in CRLF


@dataclass
class Generated:
    stream: bytes
    events: list[Expected]
    comments: int


class _Writer:
    """The stream being drawn: lines with drawn endings, values with or without the optional space."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.out = bytearray()
        self.comments = 0
        self.prev_cr = False

    def line(self, text: bytes) -> bytes:
        ending = self.draw(ENDINGS)
        if self.prev_cr and not text and ending[:1] == b"\n":
            # CR then a LF-led blank line would read as one CRLF, merging two lines into one.
            ending = b"\r\n"
        self.out.extend(text + ending)
        self.prev_cr = ending == b"\r"
        return ending

    def comment(self) -> None:
        self.comments += 1
        self.line(b":" + self.draw(LINE_TEXT).encode())

    def value(self, field: bytes, text: str) -> bytes:
        raw = text.encode()
        # One space after the colon is optional unless the value itself starts with a space.
        if raw[:1] != b" " and self.draw(st.booleans()):
            return field + b":" + raw
        return field + b": " + raw


def _event(draw: st.DrawFn, w: _Writer) -> Expected | None:
    """One event's fields in a drawn order, comments among them, then its blank line; what it dispatches."""
    data_lines = draw(st.lists(LINE_TEXT, max_size=3))
    event = draw(st.none() | LINE_TEXT)
    ids = draw(st.lists(LINE_TEXT | LINE_TEXT.map(lambda s: s + "\0"), max_size=2))
    # Fields may come in any order, but data lines (joined in order) and ids (last wins) must keep
    # their relative order, so draw a random merge of the groups rather than a full shuffle.
    groups: list[list[bytes]] = [
        [w.value(b"data", d) for d in data_lines],
        [w.value(b"id", i) for i in ids],
        [w.value(b"event", event)] if event is not None else [],
        draw(st.lists(st.sampled_from([b"retry: 5", b"x-unknown", b"foo: bar"]), max_size=2)),
    ]
    shuffled: list[bytes] = []
    while live := [g for g in groups if g]:
        shuffled.append(draw(st.sampled_from(live)).pop(0))
    for f in shuffled:
        if draw(st.integers(0, 4)) == 0:
            w.comment()
        w.line(f)
    ending = w.line(b"")
    if not data_lines:
        return None
    valid_ids = [i for i in ids if "\0" not in i]
    last_id = valid_ids[-1] if valid_ids else None
    return Expected("\n".join(data_lines), event or "", last_id, len(w.out), ending == b"\r\n")


@st.composite
def sse_streams(draw: st.DrawFn) -> Generated:
    w = _Writer(draw)
    if draw(st.booleans()):
        w.out += BOM
    expected: list[Expected] = []
    for _ in range(draw(st.integers(0, 6))):
        if (dispatched := _event(draw, w)) is not None:
            expected.append(dispatched)
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.booleans()):
                w.comment()
            w.line(b"")
    if draw(st.booleans()):
        # An unterminated event at EOF must be discarded; its last line may even lack a line end.
        w.out += b"data: partial\nevent: never"
        if draw(st.booleans()):
            w.out += b"\n"
    return Generated(bytes(w.out), expected, w.comments)


def check(gen: Generated, cuts: Iterable[int]) -> None:
    cut_set = set(cuts)
    parser, events = feed_all(split_at(gen.stream, cut_set))
    assert triples(events) == [(e.data, e.event, e.id) for e in gen.events]
    for got, want in zip(events, gen.events, strict=True):
        # Documented exception: a CRLF blank line split between its CR and LF dispatches on the CR.
        split_crlf = want.crlf and (want.end - 1) in cut_set
        assert got.end == (want.end - 1 if split_crlf else want.end)
    assert parser.comments == gen.comments
    assert parser.consumed == len(gen.stream)
    # The skipped LF of a split CRLF is credited to its event, so pending is exact either way.
    assert parser.pending == len(gen.stream) - (gen.events[-1].end if gen.events else 0)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gen=sse_streams(), data=st.data())
def test_generated_streams_independent_of_splits(gen: Generated, data: st.DataObject) -> None:
    n = len(gen.stream)
    check(gen, [])
    check(gen, range(1, n))  # one byte at a time
    for i in range(n + 1):
        check(gen, [i])
    check(gen, data.draw(st.lists(st.integers(0, n), max_size=8)))


# --- property: arbitrary bytes ---------------------------------------------------------------------

_REF_EOL = re.compile(r"\r\n|\r|\n")


def reference(stream: bytes) -> list[tuple[str, str, str | None]]:
    """Literal transcription of the spec: decode the whole stream first, then parse lines."""
    text = stream.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = _REF_EOL.split(text)[:-1]  # the last piece has no line end yet
    out: list[tuple[str, str, str | None]] = []
    data, event, last_id = "", "", None
    for line in lines:
        if line == "":
            if data:
                out.append((data.removesuffix("\n"), event, last_id))
            data, event, last_id = "", "", None
            continue
        if line.startswith(":"):
            continue
        name, colon, val = line.partition(":")
        if colon and val.startswith(" "):
            val = val[1:]
        if name == "data":
            data += val + "\n"
        elif name == "event":
            event = val
        elif name == "id" and "\0" not in val:
            last_id = val
    return out


NOISY_BYTES = st.binary(max_size=200) | st.lists(
    st.sampled_from(
        [
            b"data",
            b"event",
            b"id",
            b":",
            b" ",
            b"\r",
            b"\n",
            b"\r\n",
            b"x",
            b"\xef\xbb\xbf",
            b"\xef",
            b"\xe2\x82",
            b"\xac",
            b"\0",
            b"\xff",
        ]
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(stream=NOISY_BYTES, data=st.data())
def test_arbitrary_bytes_never_raise_and_ignore_splits(stream: bytes, data: st.DataObject) -> None:
    whole = parse(stream)
    assert triples(whole) == reference(stream)
    cuts = set(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    parts = feed_all(split_at(stream, cuts))[1]
    assert triples(parts) == triples(whole)
    for got, want in zip(parts, whole, strict=True):
        split_crlf = stream[want.end - 2 : want.end] == b"\r\n" and (want.end - 1) in cuts
        assert got.end == (want.end - 1 if split_crlf else want.end)
    one_by_one = feed_all([stream[i : i + 1] for i in range(len(stream))])[1]
    assert triples(one_by_one) == triples(whole)
