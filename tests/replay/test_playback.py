"""Replay through the real openai SDK: record a session, stop the upstream, and get it all back."""

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
from tests.support import API_KEY, Proxy, ProxyFactory, upstream_requests

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


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


async def start_replay(start_proxy: ProxyFactory, **replay: Any) -> Proxy:
    timing = replay.pop("timing", "instant")
    return await start_proxy(upstream_url="", mode="replay", replay={"timing": timing, **replay})


async def record(proxy: Proxy, prefix: str = "/s/suite/v1") -> list[Any]:
    results = await suite(proxy.client(prefix))
    await proxy.recorder.flush()
    return results


async def test_replay_gives_identical_results_in_order_with_upstream_stopped(
    start_proxy: ProxyFactory, upstream: TestServer
) -> None:
    recorder = await start_proxy()
    recorded = await record(recorder)
    rows = await recorder.rows()
    assert len(rows) == 15 and all(r["match_key"] for r in rows)
    seen = len(upstream_requests(upstream))
    await upstream.close()

    replayer = await start_replay(start_proxy)
    assert await suite(replayer.client("/s/suite/v1")) == recorded
    assert len(upstream_requests(upstream)) == seen
    assert len(await replayer.rows()) == 15, "replays are not recorded"
    # Ids repeat in recorded order: the nth identical request got the nth recording.
    again = [r["id"] for r in recorded[7:13:2]]
    assert len(set(again)) == 3


async def test_replay_headers_and_byte_identical_stream(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    body = {"model": "fake-openrouter", "messages": msgs("bytes"), "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{recorder.url}/s/b/v1/chat/completions", json=body, headers=AUTH) as resp:
            original = await resp.read()
            assert "X-Proxy-Replay" not in resp.headers, "record mode says nothing about replay"
        await recorder.recorder.flush()
        replayer = await start_replay(start_proxy)
        async with http.post(f"{replayer.url}/s/b/v1/chat/completions", json=body, headers=AUTH) as resp:
            assert resp.headers["X-Proxy-Replay"] == "hit"
            assert resp.headers["X-Proxy-Exchange-Id"] == (await recorder.rows())[0]["id"]
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["x-request-id"] == "req_fake_stream"
            assert await resp.read() == original


async def test_miss_is_not_found_naming_the_closest_recordings(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    client = recorder.client("/s/suite/v1")
    for _ in range(2):
        await client.chat.completions.create(model="fake-model", messages=msgs("what is the capital of France"))
    await client.chat.completions.create(model="fake-model", messages=msgs("something else entirely"), temperature=1)
    await client.chat.completions.create(model="fake-model", messages=msgs("tell me a joke"))
    await recorder.recorder.flush()
    replayer = await start_replay(start_proxy)
    with pytest.raises(openai.NotFoundError) as err:
        await replayer.client("/s/suite/v1").chat.completions.create(
            model="fake-model", messages=msgs("what is the capital of Spain")
        )
    message = str(err.value)
    assert "replay miss" in message and "session 'suite'" in message
    assert '/messages/1/content: "what is the capital of Spain" (recorded "what is the capital of France")' in message
    assert err.value.response.headers["X-Proxy-Replay"] == "miss"
    error = err.value.body
    assert error["type"] == "replay_miss" and error["code"] == "replay_miss"
    closest = error["closest"]
    # Ranked by how many fields differ, then by how alike the differing text is (not by recency);
    # identical recorded requests are one entry.
    assert [len(c["differences"]) for c in closest] == [1, 1, 2]
    assert closest[0]["recordings"] == 2 and "(2 recordings of it)" in message
    assert closest[1]["differences"][0]["recorded"] == "tell me a joke"
    assert closest[2]["differences"][1] == {"path": "/temperature", "request": None, "recorded": 1}
    # Another session has nothing: the message says so instead of pointing at other sessions' requests.
    with pytest.raises(openai.NotFoundError, match="session 'other' has no recorded POST /v1/chat/completions"):
        await replayer.client("/s/other/v1").chat.completions.create(model="fake-model", messages=msgs("x"))


async def test_exhausted_recordings_error_repeat_last_or_cycle(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    client = recorder.client("/s/rep/v1")
    ids = [(await client.chat.completions.create(model="fake-model", messages=msgs("same"))).id for _ in range(2)]
    await recorder.recorder.flush()

    async def third_call(policy: str) -> list[str]:
        replayer = await start_replay(start_proxy, on_exhausted=policy)
        c = replayer.client("/s/rep/v1")
        return [(await c.chat.completions.create(model="fake-model", messages=msgs("same"))).id for _ in range(4)]

    assert await third_call("repeat-last") == [*ids, ids[1], ids[1]]
    assert await third_call("cycle") == [*ids, *ids]
    replayer = await start_replay(start_proxy)
    c = replayer.client("/s/rep/v1")
    assert [(await c.chat.completions.create(model="fake-model", messages=msgs("same"))).id for _ in range(2)] == ids
    with pytest.raises(openai.NotFoundError, match=r"request #3 .* only 2 recording\(s\) match it"):
        await c.chat.completions.create(model="fake-model", messages=msgs("same"))


async def test_cursors_are_per_session_and_from_session_limits_the_search(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    a = (await recorder.client("/s/a/v1").chat.completions.create(model="fake-model", messages=msgs("hi"))).id
    b = (await recorder.client("/s/b/v1").chat.completions.create(model="fake-model", messages=msgs("hi"))).id
    await recorder.recorder.flush()
    replayer = await start_replay(start_proxy, sessions=["b"])
    for prefix in ("/v1", "/s/w1/v1", "/s/w2/v1"):  # parallel workers each start at the first recording
        got = await replayer.client(prefix).chat.completions.create(model="fake-model", messages=msgs("hi"))
        assert got.id == b
    every = await start_replay(start_proxy)
    c = every.client("/v1")  # no session, no --from-session: every recording, in recorded order
    assert [(await c.chat.completions.create(model="fake-model", messages=msgs("hi"))).id for _ in "xy"] == [a, b]


async def test_ignore_rules_apply_to_old_recordings(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    made = await recorder.client("/s/t/v1").chat.completions.create(
        model="fake-model", messages=msgs("hot"), temperature=0.1, user="alice"
    )
    await recorder.recorder.flush()
    strict = await start_replay(start_proxy)
    with pytest.raises(openai.NotFoundError, match=r"/temperature: 0\.9 \(recorded 0\.1\)"):
        await strict.client("/s/t/v1").chat.completions.create(
            model="fake-model", messages=msgs("hot"), temperature=0.9
        )
    # `user` never counts; `temperature` counts until configured away. The stored key is recomputed.
    loose = await start_replay(start_proxy, ignore=["temperature"])
    got = await loose.client("/s/t/v1").chat.completions.create(
        model="fake-model", messages=msgs("hot"), temperature=0.9, user="bob"
    )
    assert got.id == made.id


async def test_usage_chunk_only_when_the_replaying_client_asks(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    body = {"model": "fake-model", "messages": msgs("usage rules"), "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{recorder.url}/s/u/v1/chat/completions", json=body, headers=AUTH) as resp:
            original = await resp.read()
        await recorder.recorder.flush()
        [row] = await recorder.rows()
        assert (await recorder.bodies())[row["id"]]["usage_injected"] is True
        replayer = await start_replay(start_proxy, on_exhausted="repeat-last")
        async with http.post(f"{replayer.url}/s/u/v1/chat/completions", json=body, headers=AUTH) as resp:
            assert await resp.read() == original, "the injected usage chunk stays hidden, byte for byte"
    stream = await replayer.client("/s/u/v1").chat.completions.create(
        model="fake-model", messages=msgs("usage rules"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == row["total_tokens"]


async def test_stream_and_non_stream_are_converted(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    client = recorder.client("/s/c/v1")
    plain = await client.chat.completions.create(model="fake-tools", messages=msgs("convert me"), tools=TOOLS)
    streamed = [
        c async for c in await client.chat.completions.create(model="fake-model", messages=msgs("s"), stream=True)
    ]
    await recorder.recorder.flush()
    replayer = await start_replay(start_proxy)
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


async def test_partial_recordings_are_skipped_unless_asked(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    with pytest.raises(openai.APIError):
        stream = await recorder.client("/s/p/v1").chat.completions.create(
            model="fake-cut", messages=msgs("cut"), stream=True
        )
        [c async for c in stream]
    await recorder.recorder.flush()
    assert (await recorder.rows())[0]["outcome"] == "upstream_cut"
    strict = await start_replay(start_proxy)
    with pytest.raises(openai.NotFoundError, match="the same request, but not replayable"):
        await strict.client("/s/p/v1").chat.completions.create(model="fake-cut", messages=msgs("cut"), stream=True)
    lenient = await start_replay(start_proxy, include_partial=True)
    stream = await lenient.client("/s/p/v1").chat.completions.create(
        model="fake-cut", messages=msgs("cut"), stream=True
    )
    chunks = [c async for c in stream]
    assert chunks and all(ch.finish_reason is None for c in chunks for ch in c.choices)


async def test_a_stream_the_client_left_replays_with_the_status_it_received(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    slow = {"x-fake-delay-ms": "100"}
    stream = await recorder.client("/s/left/v1").chat.completions.create(
        model="fake-model", messages=msgs("leave early"), stream=True, extra_headers=slow
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    await asyncio.sleep(0.3)  # the proxy notices the client has gone at its next write
    await recorder.recorder.flush()
    (row,) = await recorder.rows()
    assert (row["outcome"], row["status"], row["upstream_status"]) == ("client_disconnected", 499, 200)
    lenient = await start_replay(start_proxy, include_partial=True)
    replayed = await lenient.client("/s/left/v1").chat.completions.create(
        model="fake-model", messages=msgs("leave early"), stream=True
    )
    assert [c.choices[0].delta.content async for c in replayed if c.choices][:2] == ["", "Echo: "]


async def test_a_stream_the_client_left_replays_only_the_bytes_it_received(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    body = {"model": "fake-model", "messages": msgs("the whole answer"), "stream": True}
    async with aiohttp.ClientSession() as http, http.post(f"{recorder.url}/s/cut/v1/chat/completions", json=body) as r:
        await r.read()
    await recorder.recorder.flush()
    (stored,) = (await recorder.bodies()).values()
    events = stored["response_body"].split(b"\n\n")
    delivered = len(b"\n\n".join(events[:2])) + 2 + 5  # two events and 5 bytes of the third reached the client
    # What the live path records when a write to a client fails: the bytes read, how far the client got.
    async with recorder.database.engine.begin() as conn:
        await conn.execute(update(exchanges).values(outcome="client_disconnected", status=499))
        await conn.execute(update(exchange_bodies).values(delivered_bytes=delivered))
    lenient = await start_replay(start_proxy, include_partial=True)
    async with aiohttp.ClientSession() as http, http.post(f"{lenient.url}/s/cut/v1/chat/completions", json=body) as r:
        assert (r.status, r.headers["X-Proxy-Replay"]) == (200, "hit")
        assert await r.read() == stored["response_body"][:delivered]


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


async def test_original_timing_reproduces_gaps_and_instant_does_not_wait(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    body = {"model": "fake-model", "messages": msgs("slow"), "stream": True}
    slow = {"x-fake-delay-ms": "60", "x-fake-events": "5"}
    live, original = await _read_times(f"{recorder.url}/s/t/v1/chat/completions", body, slow)
    await recorder.recorder.flush()
    [row] = await recorder.rows()
    offsets = [o for o, _ in (await recorder.bodies())[row["id"]]["stream_chunks"]]
    assert offsets[-1] > 300

    replayer = await start_replay(start_proxy, timing="original", on_exhausted="repeat-last")
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


async def test_named_mounts_replay_with_no_upstream_configured(start_proxy: ProxyFactory, upstream: TestServer) -> None:
    recorder = await start_proxy(upstreams={"alt": {"url": str(upstream.make_url("/v1"))}})
    made = await recorder.client("/s/n/alt/v1").chat.completions.create(model="fake-model", messages=msgs("named"))
    await recorder.recorder.flush()
    replayer = await start_replay(start_proxy)  # no upstream at all, default or named
    got = await replayer.client("/s/n/alt/v1").chat.completions.create(model="fake-model", messages=msgs("named"))
    assert got.id == made.id
    with pytest.raises(openai.NotFoundError, match=r"POST /v1/chat/completions \(upstream 'alt'\)\. Closest"):
        await replayer.client("/s/n/alt/v1").chat.completions.create(model="fake-model", messages=msgs("other"))
    # The same request on another mount is another request.
    with pytest.raises(openai.NotFoundError, match="session 'n' has no recorded POST /v1/chat/completions requests"):
        await replayer.client("/s/n/v1").chat.completions.create(model="fake-model", messages=msgs("named"))


async def test_concurrent_requests_never_share_or_swap_recordings(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    chat = recorder.client("/s/conc/v1").chat.completions
    same = [(await chat.create(model="fake-model", messages=msgs("same"))).id for _ in range(6)]
    other = {t: (await chat.create(model="fake-model", messages=msgs(t))).choices[0].message.content for t in "abcd"}
    await recorder.recorder.flush()
    replayer = await start_replay(start_proxy, timing="original", speed=5)
    c = replayer.client("/s/conc/v1").chat.completions
    # All at once, on a cold index: one load per key, each position handed out exactly once.
    got = await asyncio.gather(
        *(c.create(model="fake-model", messages=msgs("same")) for _ in range(6)),
        *(c.create(model="fake-model", messages=msgs(t)) for t in "abcd"),
    )
    assert sorted(r.id for r in got[:6]) == sorted(same)
    assert {t: r.choices[0].message.content for t, r in zip("abcd", got[6:], strict=True)} == other


async def test_auto_mode_marks_proxy_made_errors_as_recorded(start_proxy: ProxyFactory) -> None:
    """A forwarded request that ends in a 502 from the proxy itself still says it went upstream."""
    proxy = await start_proxy("http://127.0.0.1:9/v1", mode="auto")  # nothing listens on port 9
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            proxy.url + "/v1/chat/completions",
            json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert resp.status == 502
        assert resp.headers["X-Proxy-Replay"] == "recorded" and resp.headers["X-Proxy-Exchange-Id"]
    [row] = await proxy.wait_rows(1)
    assert row["outcome"] == "upstream_unreachable" and row["id"] == resp.headers["X-Proxy-Exchange-Id"]
