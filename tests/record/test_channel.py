"""Records across the socket pair: whatever the frame kind, the writer process folds what this one would."""

from __future__ import annotations

import gzip

import msgspec
import pytest

from proxy.record.channel import Channel, Kind, read_frame, read_written, record_frame, written_frame
from proxy.record.decode import finalize
from proxy.record.exchange import Exchange
from proxy.record.stats import RecorderStats
from proxy.record.tap import LAG, BodyTap
from tests.record.test_tap import GZIP_SSE, exchange, stream


def _tapped(body: bytes, *, headers: dict[str, str] | None = None, read: int = 200, cap: int = 1 << 25) -> Exchange:
    ex = exchange(headers)
    ex.request_headers = {"user-agent": "sdk"}
    tap = ex.body_tap = BodyTap(ex, cap=cap, event_limit=cap, events=True)
    for start in range(0, len(body), read):
        if tap.feed(body[start : start + read]):
            list(tap._work(LAG))  # what the tee's catch_up does, in one go
    ex.finish()
    return ex


def _kind(frame: bytes) -> Kind:
    return Kind(frame[4])


def _folded(ex: Exchange) -> tuple:
    finalize(ex)
    return (
        ex.usage, ex.event_count, ex.assembled, ex.outcome, ex.response_body, ex.decoded_body, ex.stream_chunks,
        ex.response_bytes, ex.decode_errors, ex.error, ex.ttft_ms,
    )  # fmt: skip


def _crossed(ex: Exchange, kind: Kind) -> None:
    frame = record_frame(ex)
    assert _kind(frame) is kind
    assert _folded(read_frame(frame)) == _folded(ex)


def test_a_short_stream_goes_as_msgpack_and_folds_the_same() -> None:
    _crossed(_tapped(stream(50)), Kind.PACKED)


def test_a_whole_json_body_goes_as_msgpack() -> None:
    json_headers = {"content-type": "application/json"}
    ex = Exchange(method="POST", path="/v1/chat/completions", status=200, response_headers=json_headers)
    ex.response_body = b'{"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}'
    ex.finish()
    _crossed(ex, Kind.PACKED)


@pytest.mark.parametrize(
    "why",
    ["surrogate", "long", "gzip", "capped"],
)
def test_what_msgpack_cannot_hold_goes_pickled_and_folds_the_same(why: str) -> None:
    if why == "surrogate":  # a header byte that is not UTF-8, as aiohttp hands it over
        ex = _tapped(stream(5))
        ex.request_headers = {"user-agent": "caf\udce9"}
    elif why == "long":  # decoding began on the way (past LAG)
        ex = _tapped(stream(4000), read=LAG // 2)
        assert ex.body_tap._fed
    elif why == "gzip":
        ex = _tapped(gzip.compress(stream(30)), headers=dict(GZIP_SSE), read=64)
        ex.body_tap.drain_steps()
    else:  # only the head kept
        ex = _tapped(stream(200), cap=2000)
    _crossed(ex, Kind.PICKLED)


def test_a_gzip_tap_with_a_read_not_yet_inflated_crosses_inflated() -> None:
    body = gzip.compress(stream(30))
    ex = exchange(dict(GZIP_SSE))
    tap = ex.body_tap = BodyTap(ex, cap=1 << 20, event_limit=1 << 20, events=True)
    tap.feed(body)  # the tee's catch_up never ran
    ex.finish()
    crossed = read_frame(record_frame(ex))
    assert _folded(crossed)[:4] == _folded(ex)[:4] and crossed.usage.completion_tokens == 30


def test_written_records_and_counters_come_back_as_msgpack() -> None:
    ex = _tapped(stream(3))
    finalize(ex)
    stats = RecorderStats(written=3, batches=1, database_ok=False, last_error="x")
    frame = written_frame([ex, ex], stats)
    records, back = read_written(frame[5:])
    assert back == stats and [r.usage for r in records] == [ex.usage, ex.usage]


async def test_frames_cut_anywhere_arrive_whole_and_in_order() -> None:
    got: list[tuple[Kind, bytes]] = []
    channel = Channel(lambda kind, payload: got.append((kind, payload)), lambda: None)
    frames = [record_frame(_tapped(stream(i))) for i in range(1, 30)]
    data = b"".join(frames)
    for size in (1, 7, 4096):
        got.clear()
        for start in range(0, len(data), size):
            channel.data_received(data[start : start + size])
        assert [bytes(f[5:]) for f in frames] == [p for _, p in got]
    assert msgspec.msgpack.decode(got[0][1])["method"] == "POST"
