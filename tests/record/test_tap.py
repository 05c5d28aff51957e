"""The record's copy of a body as it passes: the capped head, the fold of the whole, decoding in slices."""

from __future__ import annotations

import gzip
import random
import zlib

import msgspec
import pytest

import proxy.record.tap as tap_module
from proxy.bench.writerate import template
from proxy.record.decode import finalize
from proxy.record.exchange import Ending, Exchange, Outcome
from proxy.record.tap import BodyTap, simple_events

ENC = msgspec.json.Encoder()
SSE = {"content-type": "text/event-stream"}
GZIP_SSE = {**SSE, "content-encoding": "gzip"}


def chunk(content: str) -> bytes:
    return b"data: " + ENC.encode({"choices": [{"index": 0, "delta": {"content": content}}]}) + b"\n\n"


def stream(n: int, *, piece: str = "word ") -> bytes:
    usage = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}
    last = ENC.encode({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    tail = b"data: " + last + b"\n\ndata: " + ENC.encode({"choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n"
    return b"".join(chunk(piece) for _ in range(n)) + tail


def exchange(headers: dict[str, str] | None = None) -> Exchange:
    return Exchange(
        method="POST", path="/v1/chat/completions", stream=True, response_headers=headers or dict(SSE), status=200
    )


async def tapped(body: bytes, reads: list[bytes], *, cap: int, headers: dict[str, str] | None = None) -> Exchange:
    """``reads`` through a tap as the tee feeds it (catching up when asked), then finished as the writer does."""
    ex = exchange(headers)
    tap = ex.body_tap = BodyTap(ex, cap=cap, event_limit=1 << 20, events=True)
    for data in reads:
        if tap.feed(data):
            await tap.catch_up()
    ex.delivered = tap.total
    ex.finish()
    await tap.drain()
    return finalize(ex)


def split(body: bytes, rng: random.Random, pieces: int) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(body)), pieces))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


async def test_a_stream_past_the_cap_keeps_its_head_and_the_whole_fold() -> None:
    body = stream(20_000)  # about 1.4 MiB: decoded on the way, past LAG
    ex = await tapped(body, split(body, random.Random(1), 300), cap=100_000)
    assert ex.response_body == body[:100_000] and ex.response_bytes == len(body) and ex.truncated
    assert ex.stream_chunks[-1][1] == 100_000 and all(end <= 100_000 for _, end in ex.stream_chunks)
    assert ex.usage.completion_tokens == 20_000 and ex.outcome is Outcome.COMPLETE and ex.finish_reason == "stop"
    assert ex.event_count == 20_003
    text = msgspec.json.decode(ex.assembled)["choices"][0]["message"]["content"]
    assert len(text) <= 100_000 + len("word ") and text.startswith("word word")


@pytest.mark.parametrize("seed", range(6))
async def test_the_fold_does_not_depend_on_how_the_stream_was_read(seed: int) -> None:
    rng = random.Random(seed)
    body = stream(rng.randint(1, 6000), piece="é ✓ ")
    whole = await tapped(body, [body], cap=1 << 30)
    cut = await tapped(body, split(body, rng, rng.randint(1, 200)), cap=1 << 30)
    fields = ("usage", "assembled", "event_count", "outcome", "finish_reason", "decode_errors", "response_bytes")
    assert [getattr(cut, f) for f in fields] == [getattr(whole, f) for f in fields]
    assert cut.response_body == body and not cut.truncated


async def test_reads_that_cut_events_leave_the_parser_only_the_cut_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    # A slice that starts or ends inside an event takes the blank-line split for the whole events between;
    # the general parser gets only the two cut ends, never a slice of 64 KiB (a step of milliseconds).
    parsed: list[int] = []
    feed = tap_module.SSEParser.feed

    def counted(self: tap_module.SSEParser, data: bytes) -> list[object]:
        parsed.append(len(data))
        return feed(self, data)

    monkeypatch.setattr(tap_module.SSEParser, "feed", counted)
    body = stream(20_000)
    ex = await tapped(body, split(body, random.Random(2), 40), cap=1 << 30)
    assert ex.event_count == 20_003 and ex.usage.completion_tokens == 20_000 and ex.outcome is Outcome.COMPLETE
    assert parsed and max(parsed) <= 2 * len(chunk("word ")), max(parsed)


async def test_a_read_larger_than_a_slice_is_decoded_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    decode = tap_module.EventDecoder.feed

    def observed(self: tap_module.EventDecoder, reads: list[tuple[float, bytes]]) -> None:
        sizes.append(sum(len(data) for _, data in reads))
        decode(self, reads)

    monkeypatch.setattr(tap_module.EventDecoder, "feed", observed)
    body = stream(20_000)  # about 1.4 MiB
    ex = await tapped(body, [body[:5], body[5:]], cap=1 << 30)  # the tee's reads of a fast stream are this big
    assert ex.event_count == 20_003 and ex.outcome is Outcome.COMPLETE and sum(sizes) == len(body)
    assert max(sizes) <= tap_module.SLICE + (tap_module.SLICE >> 1), max(sizes)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_an_encoded_stream_is_decoded_as_it_passes(encoding: str) -> None:
    body = stream(30_000)
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    reads = split(packed, random.Random(2), 50)
    ex = await tapped(body, reads, cap=50_000, headers={**SSE, "content-encoding": encoding})
    assert ex.decoded_body == body[:50_000] and ex.response_bytes == len(body)
    assert ex.usage.total_tokens == 30_003 and ex.outcome is Outcome.COMPLETE
    assert ex.stored_response()[0] == SSE, "stored decoded, without its content-encoding"


async def test_a_broken_gzip_stream_is_recorded_with_what_decoded_and_why() -> None:
    body = stream(300, piece="".join(map(str, range(3000))))  # compresses poorly: many blocks
    packed = bytearray(gzip.compress(body))
    packed[len(packed) // 2 :] = b"\x07garbage" * (len(packed) // 16)
    reads = [bytes(packed[i : i + 999]) for i in range(0, len(packed), 999)]
    ex = await tapped(b"", reads, cap=1 << 25, headers=GZIP_SSE)
    assert ex.outcome is Outcome.UPSTREAM_CUT and ex.usage.total_tokens is None
    assert ex.error is not None and ex.error.startswith("response gzip encoding broke off after ")
    assert ex.decoded_body[:1000] == body[:1000] and ex.response_bytes == len(ex.decoded_body)


async def test_a_gzip_stream_that_ends_early_says_so() -> None:
    packed = gzip.compress(stream(50))
    ex = await tapped(b"", [packed[: len(packed) // 2]], cap=1 << 20, headers=GZIP_SSE)
    assert ex.ending is Ending.BODY_END and ex.outcome is Outcome.UPSTREAM_CUT
    assert ex.error is not None and "ended before its compressed stream did" in ex.error


async def test_an_event_that_never_ends_is_not_held() -> None:
    ex = exchange()
    tap = ex.body_tap = BodyTap(ex, cap=1000, event_limit=64 << 10, events=True)
    for _ in range(200):  # 20 MB of one line
        if tap.feed(b"data: " + b"x" * 100_000):
            await tap.catch_up()
        assert tap.decoder is not None and tap.decoder.parser.pending < (64 << 10) + tap_module.LAG + 200_000
    ex.finish()
    await tap.drain()
    finalize(ex)
    assert ex.response_bytes == 200 * 100_006 and ex.decode_errors > 0 and len(ex.response_body) == 1000


@pytest.mark.parametrize("seed", range(20))
def test_simple_event_split_matches_the_sse_parser(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blank-line split used for plain ``data:`` streams gives what the general parser gives,
    TTFT (the read that completed the first output event) included, wherever the reads were cut."""
    base = template("stream50")
    body = base.response_body.replace(b"data: ", b"data:", seed % 2)  # both spellings of the field
    rng = random.Random(seed)
    ends = [*sorted(rng.sample(range(1, len(body)), rng.randint(0, 40))), len(body)]
    chunks = [(float(i * 7 + 1), end) for i, end in enumerate(ends)]
    fast = finalize(msgspec.structs.replace(base, response_body=body, stream_chunks=list(chunks)))
    assert simple_events(body) is not None
    monkeypatch.setattr(tap_module, "simple_events", lambda _body: None)
    general = finalize(msgspec.structs.replace(base, response_body=body, stream_chunks=list(chunks)))
    fields = ("ttft_ms", "usage", "assembled", "event_count", "outcome", "finish_reason", "decode_errors")
    assert [getattr(fast, f) for f in fields] == [getattr(general, f) for f in fields]


def test_streams_the_split_does_not_handle_go_to_the_parser() -> None:
    assert simple_events(b"data: 1\n\ndata: 2\n\n") == [(9, b"1"), (18, b"2")]
    for body in (b"data: 1\r\n\r\n", b": keep-alive\n\ndata: 1\n\n", b"data: 1\ndata: 2\n\n", b"data: 1\n\ndata: 2"):
        assert simple_events(body) is None
