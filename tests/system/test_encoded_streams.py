"""Upstreams that compress their event streams although the proxy asked for ``Accept-Encoding: identity``.

The upstream here gzips (or deflates) every stream, flushing after each event as a streaming server
does. Through the real openai SDK: the stream is recorded complete with its usage, a client that did
not ask for usage never sees the usage chunk the proxy asked for, and a stream whose compression breaks
is recorded with a clear error while the proxy goes on serving.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import msgspec
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support import ProxyFactory

MESSAGES = [{"role": "user", "content": "one two three"}]
WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
WORDS = 40
ENC = msgspec.json.Encoder()


def events(include_usage: bool) -> list[bytes]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices}
        return b"data: " + ENC.encode({**obj, **extra}) + b"\n\n"

    out = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    out += [chunk([{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]) for i in range(WORDS)]
    out.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if include_usage:
        out.append(chunk([], usage={"prompt_tokens": 3, "completion_tokens": WORDS, "total_tokens": 3 + WORDS}))
    return [*out, b"data: [DONE]\n\n"]


def compressing_upstream() -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        encoding = request.headers["x-test-encoding"]
        broken = "x-test-broken" in request.headers
        assert request.headers["Accept-Encoding"] == "identity", "the proxy asks for identity"
        packer = zlib.compressobj(wbits=WBITS[encoding])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Content-Encoding": encoding})
        await resp.prepare(request)
        for i, event in enumerate(events(bool((body.get("stream_options") or {}).get("include_usage")))):
            if broken and i == WORDS // 2:
                await resp.write(b"\xff\xfenot deflate at all" * 50)
                break
            await resp.write(packer.compress(event) + packer.flush(zlib.Z_SYNC_FLUSH))
        else:
            await resp.write(packer.flush())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture
async def compressing(aiohttp_server: Callable[..., Any]) -> TestServer:
    return await aiohttp_server(compressing_upstream())


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("client_asks_usage", [False, True])
async def test_a_compressed_stream_is_recorded_whole_and_the_client_sees_what_it_asked_for(
    start_proxy: ProxyFactory, compressing: TestServer, encoding: str, client_asks_usage: bool
) -> None:
    proxy = await start_proxy(str(compressing.make_url("/v1")))
    client = proxy.client(default_headers={"x-test-encoding": encoding})
    extra = {"stream_options": {"include_usage": True}} if client_asks_usage else {}
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True, **extra)
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"w{i} " for i in range(WORDS))
    usage_chunks = [c for c in chunks if not c.choices]
    if client_asks_usage:
        assert [c.usage.total_tokens for c in usage_chunks] == [3 + WORDS]
    else:
        assert usage_chunks == [], "the usage chunk the proxy asked for never reaches this client"
        assert all(c.choices[0] is not None for c in chunks)
    [row] = await proxy.rows()
    assert row["outcome"] == "complete" and row["error"] is None and row["status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"], row["usage_source"]) == (3, WORDS, "provider")
    stored = (await proxy.bodies())[row["id"]]
    assert stored["response_body"] == b"".join(events(True)), "stored decoded, every event"
    assert "content-encoding" not in stored["response_headers"]
    assert stored["response_bytes"] == len(stored["response_body"]) and not stored["response_truncated"]


@pytest.mark.parametrize("client_asks_usage", [False, True])
async def test_a_broken_gzip_stream_is_recorded_with_a_clear_error(
    start_proxy: ProxyFactory, compressing: TestServer, client_asks_usage: bool
) -> None:
    proxy = await start_proxy(str(compressing.make_url("/v1")))
    client = proxy.client(default_headers={"x-test-encoding": "gzip"})
    extra = {"stream_options": {"include_usage": True}} if client_asks_usage else {}
    with pytest.raises(openai.APIError):  # the SDK's own decoder fails, or the stream is cut
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, extra_headers={"x-test-broken": "1"}, **extra
        )
        [c async for c in stream]
    [row] = await proxy.wait_rows(1)
    assert row["outcome"] == "upstream_cut" and row["usage_source"] == "missing"
    assert row["error"].startswith("response gzip encoding broke off after "), row["error"]
    stored = (await proxy.bodies())[row["id"]]
    assert stored["response_body"].startswith(b"".join(events(True)[:3])), "what decoded is kept"
    # The proxy goes on serving and recording.
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert len([c async for c in stream]) == WORDS + 2, "role, words, finish; no usage chunk"
    rows = await proxy.wait_rows(2)
    assert [r["outcome"] for r in rows] == ["upstream_cut", "complete"]
