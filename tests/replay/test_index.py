"""Which recording answers (``proxy.replay.index``), through the real openai SDK: the nth identical request
gets the nth recording, per session and mount, under the configured ignore rules and exhaustion policy,
concurrent requests never share one; a miss names the closest recorded requests."""

from __future__ import annotations

import asyncio

import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.support import Proxy, ProxyFactory
from tests.support.traffic import msgs


async def test_miss_is_not_found_naming_the_closest_recordings(proxy: Proxy, start_replay: ProxyFactory) -> None:
    client = proxy.client("/s/suite/v1")
    for _ in range(2):
        await client.chat.completions.create(model="fake-model", messages=msgs("what is the capital of France"))
    await client.chat.completions.create(model="fake-model", messages=msgs("something else entirely"), temperature=1)
    await client.chat.completions.create(model="fake-model", messages=msgs("tell me a joke"))
    await proxy.recorder.flush()
    replayer = await start_replay()
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


async def test_exhausted_recordings_error_repeat_last_or_cycle(proxy: Proxy, start_replay: ProxyFactory) -> None:
    client = proxy.client("/s/rep/v1")
    ids = [(await client.chat.completions.create(model="fake-model", messages=msgs("same"))).id for _ in range(2)]
    await proxy.recorder.flush()

    async def third_call(policy: str) -> list[str]:
        replayer = await start_replay(on_exhausted=policy)
        c = replayer.client("/s/rep/v1")
        return [(await c.chat.completions.create(model="fake-model", messages=msgs("same"))).id for _ in range(4)]

    assert await third_call("repeat-last") == [*ids, ids[1], ids[1]]
    assert await third_call("cycle") == [*ids, *ids]
    replayer = await start_replay()
    c = replayer.client("/s/rep/v1")
    assert [(await c.chat.completions.create(model="fake-model", messages=msgs("same"))).id for _ in range(2)] == ids
    with pytest.raises(openai.NotFoundError, match=r"request #3 .* only 2 recording\(s\) match it"):
        await c.chat.completions.create(model="fake-model", messages=msgs("same"))


async def test_cursors_are_per_session_and_from_session_limits_the_search(
    proxy: Proxy, start_replay: ProxyFactory
) -> None:
    a = (await proxy.client("/s/a/v1").chat.completions.create(model="fake-model", messages=msgs("hi"))).id
    b = (await proxy.client("/s/b/v1").chat.completions.create(model="fake-model", messages=msgs("hi"))).id
    await proxy.recorder.flush()
    replayer = await start_replay(sessions=["b"])
    for prefix in ("/v1", "/s/w1/v1", "/s/w2/v1"):  # parallel workers each start at the first recording
        got = await replayer.client(prefix).chat.completions.create(model="fake-model", messages=msgs("hi"))
        assert got.id == b
    every = await start_replay()
    c = every.client("/v1")  # no session, no --from-session: every recording, in recorded order
    assert [(await c.chat.completions.create(model="fake-model", messages=msgs("hi"))).id for _ in "xy"] == [a, b]


async def test_ignore_rules_apply_to_old_recordings(proxy: Proxy, start_replay: ProxyFactory) -> None:
    made = await proxy.client("/s/t/v1").chat.completions.create(
        model="fake-model", messages=msgs("hot"), temperature=0.1, user="alice"
    )
    await proxy.recorder.flush()
    strict = await start_replay()
    with pytest.raises(openai.NotFoundError, match=r"/temperature: 0\.9 \(recorded 0\.1\)"):
        await strict.client("/s/t/v1").chat.completions.create(
            model="fake-model", messages=msgs("hot"), temperature=0.9
        )
    # `user` never counts; `temperature` counts until configured away. The stored key is recomputed.
    loose = await start_replay(ignore=["temperature"])
    got = await loose.client("/s/t/v1").chat.completions.create(
        model="fake-model", messages=msgs("hot"), temperature=0.9, user="bob"
    )
    assert got.id == made.id


async def test_partial_recordings_are_skipped_unless_asked(proxy: Proxy, start_replay: ProxyFactory) -> None:
    with pytest.raises(openai.APIError):
        stream = await proxy.client("/s/p/v1").chat.completions.create(
            model="fake-cut", messages=msgs("cut"), stream=True
        )
        [c async for c in stream]
    await proxy.recorder.flush()
    assert (await proxy.rows())[0]["outcome"] == "upstream_cut"
    strict = await start_replay()
    with pytest.raises(openai.NotFoundError, match="the same request, but not replayable"):
        await strict.client("/s/p/v1").chat.completions.create(model="fake-cut", messages=msgs("cut"), stream=True)
    lenient = await start_replay(include_partial=True)
    stream = await lenient.client("/s/p/v1").chat.completions.create(
        model="fake-cut", messages=msgs("cut"), stream=True
    )
    chunks = [c async for c in stream]
    assert chunks and all(ch.finish_reason is None for c in chunks for ch in c.choices)


async def test_named_mounts_replay_with_no_upstream_configured(
    start_proxy: ProxyFactory, start_replay: ProxyFactory, upstream: TestServer
) -> None:
    recorder = await start_proxy(upstreams={"alt": {"url": str(upstream.make_url("/v1"))}})
    made = await recorder.client("/s/n/alt/v1").chat.completions.create(model="fake-model", messages=msgs("named"))
    await recorder.recorder.flush()
    replayer = await start_replay()  # no upstream at all, default or named
    got = await replayer.client("/s/n/alt/v1").chat.completions.create(model="fake-model", messages=msgs("named"))
    assert got.id == made.id
    with pytest.raises(openai.NotFoundError, match=r"POST /v1/chat/completions \(upstream 'alt'\)\. Closest"):
        await replayer.client("/s/n/alt/v1").chat.completions.create(model="fake-model", messages=msgs("other"))
    # The same request on another mount is another request.
    with pytest.raises(openai.NotFoundError, match="session 'n' has no recorded POST /v1/chat/completions requests"):
        await replayer.client("/s/n/v1").chat.completions.create(model="fake-model", messages=msgs("named"))


async def test_concurrent_requests_never_share_or_swap_recordings(proxy: Proxy, start_replay: ProxyFactory) -> None:
    chat = proxy.client("/s/conc/v1").chat.completions
    same = [(await chat.create(model="fake-model", messages=msgs("same"))).id for _ in range(6)]
    other = {t: (await chat.create(model="fake-model", messages=msgs(t))).choices[0].message.content for t in "abcd"}
    await proxy.recorder.flush()
    replayer = await start_replay(timing="original", speed=5)
    c = replayer.client("/s/conc/v1").chat.completions
    # All at once, on a cold index: one load per key, each position handed out exactly once.
    got = await asyncio.gather(
        *(c.create(model="fake-model", messages=msgs("same")) for _ in range(6)),
        *(c.create(model="fake-model", messages=msgs(t)) for t in "abcd"),
    )
    assert sorted(r.id for r in got[:6]) == sorted(same)
    assert {t: r.choices[0].message.content for t, r in zip("abcd", got[6:], strict=True)} == other
