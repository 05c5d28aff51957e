"""How a recording is played (``proxy.replay.playback``), through the real openai SDK: record a session,
stop the upstream, and get it all back: the same results in order, the same bytes and headers, the usage
chunk only for a client that asks, streams and bodies converted, a client that left replayed as it was
served, the recorded timing, and auto mode recording what it cannot replay."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import update

from proxy.replay.playback import as_delivered
from proxy.store.tables import exchange_bodies, exchanges
from tests.support import Proxy, ProxyFactory, upstream_requests
from tests.support.traffic import AUTH, TOOLS, msgs, post_json


async def suite(client: openai.AsyncOpenAI) -> list[Any]:
    """A test suite's traffic: every shape the replay must give back identically and in order."""
    out: list[Any] = []
    chat = client.chat.completions

    async def streamed(**kw: Any) -> list[dict[str, Any]]:
        return [c.model_dump() async for c in await chat.create(stream=True, **kw)]

    out.append((await chat.create(model="fake-model", messages=msgs("plain call"))).model_dump())
    out.append(await streamed(model="fake-model", messages=msgs("a stream")))
    out.append(await streamed(model="fake-model", messages=msgs("a stream"), stream_options={"include_usage": True}))
    out.append((await chat.create(model="fake-tools", messages=msgs("weather?"), tools=TOOLS)).model_dump())
    out.append(await streamed(model="fake-tools", messages=msgs("weather?"), tools=TOOLS))
    out.append((await chat.create(model="fake-model", messages=msgs("two answers"), n=2)).model_dump())
    out.append(await streamed(model="fake-model", messages=msgs("two answers"), n=2))
    for _ in range(3):  # repeated identical prompts: each recording has its own id
        out.append((await chat.create(model="fake-model", messages=msgs("again"))).model_dump())
        out.append(await streamed(model="fake-model", messages=msgs("again")))
    out.append(await streamed(model="fake-openrouter", messages=msgs("comments and CRLF")))
    with pytest.raises(openai.RateLimitError) as err:
        await chat.create(model="fake-error-429", messages=msgs("too many"))
    out.append((err.value.status_code, err.value.body, err.value.response.headers.get("x-request-id")))
    return out


async def record(proxy: Proxy, prefix: str = "/s/suite/v1") -> list[Any]:
    results = await suite(proxy.client(prefix))
    await proxy.recorder.flush()
    return results


async def test_replay_gives_identical_results_in_order_with_upstream_stopped(
    proxy: Proxy, start_replay: ProxyFactory, upstream: TestServer
) -> None:
    recorded = await record(proxy)
    rows = await proxy.rows()
    assert len(rows) == 15 and all(r["match_key"] for r in rows)
    seen = len(upstream_requests(upstream))
    await upstream.close()

    replayer = await start_replay()
    assert await suite(replayer.client("/s/suite/v1")) == recorded
    assert len(upstream_requests(upstream)) == seen
    assert len(await replayer.rows()) == 15, "replays are not recorded"
    # Ids repeat in recorded order: the nth identical request got the nth recording.
    again = [r["id"] for r in recorded[7:13:2]]
    assert len(set(again)) == 3


async def test_replay_headers_and_byte_identical_stream(proxy: Proxy, start_replay: ProxyFactory) -> None:
    body = {"model": "fake-openrouter", "messages": msgs("bytes"), "stream": True}
    original = await post_json(f"{proxy.url}/s/b/v1/chat/completions", body)
    assert "X-Proxy-Replay" not in original.headers, "record mode says nothing about replay"
    await proxy.recorder.flush()
    replayer = await start_replay()
    replayed = await post_json(f"{replayer.url}/s/b/v1/chat/completions", body)
    assert replayed.headers["X-Proxy-Replay"] == "hit"
    assert replayed.headers["X-Proxy-Exchange-Id"] == (await proxy.rows())[0]["id"]
    assert replayed.headers["Content-Type"].startswith("text/event-stream")
    assert replayed.headers["x-request-id"] == "req_fake_stream"
    assert replayed.body == original.body


async def test_usage_chunk_only_when_the_replaying_client_asks(proxy: Proxy, start_replay: ProxyFactory) -> None:
    body = {"model": "fake-model", "messages": msgs("usage rules"), "stream": True}
    original = await post_json(f"{proxy.url}/s/u/v1/chat/completions", body)
    await proxy.recorder.flush()
    [row] = await proxy.rows()
    assert (await proxy.bodies())[row["id"]]["usage_injected"] is True
    replayer = await start_replay(on_exhausted="repeat-last")
    replayed = await post_json(f"{replayer.url}/s/u/v1/chat/completions", body)
    assert replayed.body == original.body, "the injected usage chunk stays hidden, byte for byte"
    stream = await replayer.client("/s/u/v1").chat.completions.create(
        model="fake-model", messages=msgs("usage rules"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == row["total_tokens"]


async def test_stream_and_non_stream_are_converted(proxy: Proxy, start_replay: ProxyFactory) -> None:
    client = proxy.client("/s/c/v1")
    plain = await client.chat.completions.create(model="fake-tools", messages=msgs("convert me"), tools=TOOLS)
    streamed = [
        c async for c in await client.chat.completions.create(model="fake-model", messages=msgs("s"), stream=True)
    ]
    await proxy.recorder.flush()
    replayer = await start_replay()
    c = replayer.client("/s/c/v1")

    raw = await c.chat.completions.with_raw_response.create(
        model="fake-tools",
        messages=msgs("convert me"),
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["X-Proxy-Replay-Converted"] == "json-to-stream"
    chunks = [x async for x in raw.parse()]
    call = plain.choices[0].message.tool_calls[0]
    got = [tc for x in chunks for ch in x.choices for tc in ch.delta.tool_calls or ()]
    assert [(t.id, t.function.name, t.function.arguments) for t in got] == [
        (call.id, call.function.name, call.function.arguments)
    ]
    assert [ch.finish_reason for x in chunks for ch in x.choices if ch.finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.model_dump() == plain.usage.model_dump()

    raw = await c.chat.completions.with_raw_response.create(model="fake-model", messages=msgs("s"))
    assert raw.headers["X-Proxy-Replay-Converted"] == "stream-to-json"
    completion = raw.parse()
    assert completion.choices[0].message.content == "".join(x.choices[0].delta.content or "" for x in streamed)
    assert completion.id == streamed[0].id and completion.usage.total_tokens > 0


async def test_a_stream_the_client_left_replays_with_the_status_it_received(
    proxy: Proxy, start_replay: ProxyFactory
) -> None:
    slow = {"x-fake-delay-ms": "100"}
    stream = await proxy.client("/s/left/v1").chat.completions.create(
        model="fake-model", messages=msgs("leave early"), stream=True, extra_headers=slow
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    await asyncio.sleep(0.3)  # the proxy notices the client has gone at its next write
    await proxy.recorder.flush()
    (row,) = await proxy.rows()
    assert (row["outcome"], row["status"], row["upstream_status"]) == ("client_disconnected", 499, 200)
    lenient = await start_replay(include_partial=True)
    replayed = await lenient.client("/s/left/v1").chat.completions.create(
        model="fake-model", messages=msgs("leave early"), stream=True
    )
    assert [c.choices[0].delta.content async for c in replayed if c.choices][:2] == ["", "Echo: "]


async def test_a_stream_the_client_left_replays_only_the_bytes_it_received(
    proxy: Proxy, start_replay: ProxyFactory
) -> None:
    body = {"model": "fake-model", "messages": msgs("the whole answer"), "stream": True}
    await post_json(f"{proxy.url}/s/cut/v1/chat/completions", body)
    await proxy.recorder.flush()
    (stored,) = (await proxy.bodies()).values()
    events = stored["response_body"].split(b"\n\n")
    delivered = len(b"\n\n".join(events[:2])) + 2 + 5  # two events and 5 bytes of the third reached the client
    # What the live path records when a write to a client fails: the bytes read, how far the client got.
    async with proxy.database.engine.begin() as conn:
        await conn.execute(update(exchanges).values(outcome="client_disconnected", status=499))
        await conn.execute(update(exchange_bodies).values(delivered_bytes=delivered))
    lenient = await start_replay(include_partial=True)
    replayed = await post_json(f"{lenient.url}/s/cut/v1/chat/completions", body)
    assert (replayed.status, replayed.headers["X-Proxy-Replay"]) == (200, "hit")
    assert replayed.body == stored["response_body"][:delivered]


def test_as_delivered_cuts_the_reads_where_the_client_stopped() -> None:
    reads = [(1.0, 4), (2.0, 9), (3.0, 12)]
    assert as_delivered(b"aaaabbbbbcc", reads, None) == (b"aaaabbbbbcc", reads)
    assert as_delivered(b"aaaabbbbbccc", reads, 6) == (b"aaaabb", [(1.0, 4), (2.0, 6)])
    assert as_delivered(b"aaaabbbbbccc", reads, 9) == (b"aaaabbbbb", [(1.0, 4), (2.0, 9)])
    assert as_delivered(b"aaaabbbbbccc", reads, 0) == (b"", [(1.0, 0)])


async def test_auto_mode_replays_hits_and_records_misses(start_proxy: ProxyFactory, upstream: TestServer) -> None:
    first = await start_proxy(mode="auto")
    raw = await first.client("/s/auto/v1").chat.completions.with_raw_response.create(
        model="fake-model", messages=msgs("once")
    )
    assert raw.headers["X-Proxy-Replay"] == "recorded"
    await first.recorder.flush()
    second = await start_proxy(mode="auto")
    client = second.client("/s/auto/v1")
    hit = await client.chat.completions.with_raw_response.create(model="fake-model", messages=msgs("once"))
    assert hit.headers["X-Proxy-Replay"] == "hit" and hit.parse().id == raw.parse().id
    new = await client.chat.completions.with_raw_response.create(model="fake-model", messages=msgs("twice"))
    assert new.headers["X-Proxy-Replay"] == "recorded"
    assert len(upstream_requests(upstream)) == 2
    assert len(await second.rows()) == 2


async def _read_times(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[list[float], bytes]:
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        async with http.post(url, json=body, headers={**AUTH, **headers}) as resp:
            times, data = [], b""
            async for piece in resp.content.iter_any():
                times.append((time.perf_counter() - started) * 1000)
                data += piece
    return times, data


async def test_original_timing_reproduces_gaps_and_instant_does_not_wait(
    proxy: Proxy, start_replay: ProxyFactory
) -> None:
    body = {"model": "fake-model", "messages": msgs("slow"), "stream": True}
    slow = {"x-fake-delay-ms": "60", "x-fake-events": "5"}
    live, original = await _read_times(f"{proxy.url}/s/t/v1/chat/completions", body, slow)
    await proxy.recorder.flush()
    [row] = await proxy.rows()
    offsets = [o for o, _ in (await proxy.bodies())[row["id"]]["stream_chunks"]]
    assert offsets[-1] > 300

    replayer = await start_replay(timing="original", on_exhausted="repeat-last")
    url = f"{replayer.url}/s/t/v1/chat/completions"
    times, data = await _read_times(url, body, {})
    assert data == original
    # Never early. A loaded machine may make it late, so the bounds are relative: a replay that skipped
    # the waits, or waited each gap twice, still falls outside them.
    total = offsets[-1]
    assert total * 0.95 < times[-1] < total * 1.5 + 100, (times, offsets)
    gaps = [b - a for a, b in itertools.pairwise(times) if b - a > 20]
    # As the first client saw them (the usage chunk the proxy injected was held back from both).
    recorded_gaps = [b - a for a, b in itertools.pairwise(live) if b - a > 20]
    assert len(recorded_gaps) >= 5 and len(gaps) >= len(recorded_gaps) - 1, (gaps, recorded_gaps)
    recorded_median = statistics.median(recorded_gaps)
    assert abs(statistics.median(gaps) - recorded_median) < recorded_median * 0.4, (gaps, recorded_gaps)

    fast, data = await _read_times(url, body, {"X-Proxy-Replay-Timing": "10"})
    assert data == original
    assert total / 10 * 0.9 < fast[-1] < times[-1] / 3, (fast, times)
    instant, data = await _read_times(url, body, {"X-Proxy-Replay-Timing": "instant"})
    assert instant[-1] < total / 2 and data == original, (instant, offsets)


async def test_auto_mode_marks_proxy_made_errors_as_recorded(start_proxy: ProxyFactory) -> None:
    """A forwarded request that ends in a 502 from the proxy itself still says it went upstream."""
    proxy = await start_proxy("http://127.0.0.1:9/v1", mode="auto")  # nothing listens on port 9
    resp = await post_json(proxy.url + "/v1/chat/completions", {"model": "fake-model", "messages": msgs("hi")})
    assert resp.status == 502
    assert resp.headers["X-Proxy-Replay"] == "recorded" and resp.headers["X-Proxy-Exchange-Id"]
    [row] = await proxy.wait_rows(1)
    assert row["outcome"] == "upstream_unreachable" and row["id"] == resp.headers["X-Proxy-Exchange-Id"]
