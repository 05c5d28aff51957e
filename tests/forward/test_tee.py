"""Streams through the tee: first chunk early, bytes untouched, usage, disconnects, upstream failures, gzip."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.apis.codec import ANY_DECODER
from proxy.testing import fake_upstream
from tests.support import API_KEY, FaultReport, Proxy, ProxyFactory

MESSAGES = [{"role": "user", "content": "one two three four five six"}]


AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(params=[False, True], ids=["tee", "relay"])
def relay(request: pytest.FixtureRequest) -> bool:
    """Every test here runs through the tee and again through the relay (``forward.relay``): the endings the
    tee is held to (client leaves, upstream cuts or errs, timeouts, usage filtering, gzip) are the relay's too."""
    return bool(request.param)


@pytest.fixture
def start_proxy(start_proxy: ProxyFactory, relay: bool) -> ProxyFactory:
    def start(*args: object, **settings: object) -> object:
        settings.setdefault("server", {"relay": relay})
        return start_proxy(*args, **settings)

    return start


@pytest.fixture
async def proxy(start_proxy: ProxyFactory) -> Proxy:
    return await start_proxy()


def chat_body(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": MESSAGES, "stream": True, **extra}


async def test_client_gets_first_chunk_before_upstream_sends_the_last(proxy: Proxy, upstream: TestServer) -> None:
    gate = asyncio.Event()
    upstream.app[fake_upstream.CONTROL].gate = gate
    stream = await proxy.client().chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    iterator = stream.__aiter__()
    first = await asyncio.wait_for(iterator.__anext__(), timeout=5)
    # The upstream is parked after its first chunk until the gate opens: the proxy did not buffer.
    assert first.choices[0].delta.role == "assistant"
    assert not gate.is_set()
    gate.set()
    rest = [c async for c in iterator]
    assert rest[-1].choices[0].finish_reason == "stop"
    [row] = await proxy.rows()
    assert row["outcome"] == "complete"


async def test_openrouter_stream_bytes_pass_untouched(proxy: Proxy, upstream: TestServer) -> None:
    body = chat_body("fake-openrouter", stream_options={"include_usage": True})
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(f"{proxy.url}/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        received = await resp.read()
        exchange_id = resp.headers["X-Proxy-Exchange-Id"]
    assert received.startswith(b": OPENROUTER PROCESSING\r\n\r\n")
    assert b"\r\n\r\n" in received and received.endswith(b"data: [DONE]\r\n\r\n")
    [row] = await proxy.rows()
    assert row["id"] == exchange_id
    stored = (await proxy.bodies())[exchange_id]
    assert stored["response_body"] == received, "client bytes == recorded bytes, comments and CRLF included"
    # usage rode on the last content chunk, with OpenRouter's own cost
    assembled = ANY_DECODER.decode(stored["assembled"])
    assert assembled["usage"]["cost"] > 0
    assert assembled["provider"] == "FakeProvider"
    assert row["prompt_tokens"] == 6 and row["completion_tokens"] == len(
        assembled["choices"][0]["message"]["content"].split()
    )
    assert row["usage_source"] == "provider" and row["outcome"] == "complete"


async def test_openrouter_usage_on_content_chunk_is_not_stripped(proxy: Proxy) -> None:
    stream = await proxy.client().chat.completions.create(model="fake-openrouter", messages=MESSAGES, stream=True)
    chunks = [c async for c in stream]
    # The usage arrives on a chunk that also has choices: the client keeps it, nothing is lost.
    assert chunks[-1].choices and chunks[-1].usage is not None
    [row] = await proxy.rows()
    assert row["total_tokens"] == chunks[-1].usage.total_tokens


async def test_reasoning_and_cached_tokens(proxy: Proxy) -> None:
    stream = await proxy.client().chat.completions.create(model="fake-reasoning", messages=MESSAGES, stream=True)
    [c async for c in stream]
    [row] = await proxy.rows()
    assert row["cached_tokens"] == 3 and row["reasoning_tokens"] == 3
    assembled = ANY_DECODER.decode((await proxy.bodies())[row["id"]]["assembled"])
    assert assembled["choices"][0]["message"]["reasoning"].startswith("think think")


async def test_stream_without_usage_records_null_not_zero(proxy: Proxy) -> None:
    stream = await proxy.client().chat.completions.create(model="fake-no-usage", messages=MESSAGES, stream=True)
    [c async for c in stream]
    [row] = await proxy.rows()
    assert row["usage_source"] == "missing"
    assert row["prompt_tokens"] is None and row["completion_tokens"] is None and row["total_tokens"] is None
    assert row["outcome"] == "complete"


async def test_client_disconnect_mid_stream_is_recorded_partial(proxy: Proxy, upstream: TestServer) -> None:
    gate = asyncio.Event()
    upstream.app[fake_upstream.CONTROL].gate = gate
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{proxy.url}/v1/chat/completions", json=chat_body("fake-model"), headers=AUTH)
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        resp.close()  # the client goes away while the upstream is still generating
    gate.set()
    [row] = await proxy.wait_rows(1)
    assert row["status"] == 499 and row["upstream_status"] == 200
    assert row["outcome"] == "client_disconnected"
    assert row["ttft_ms"] is None or row["ttft_ms"] > 0
    body = (await proxy.bodies())[row["id"]]
    assert body["response_body"].startswith(first)


async def test_client_disconnect_after_content_keeps_ttft(proxy: Proxy, upstream: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{proxy.url}/v1/chat/completions",
            json=chat_body("fake-model"),
            headers={**AUTH, "x-fake-delay-ms": "50", "x-fake-events": "40"},
        )
        await resp.content.readuntil(b"\n\n")
        await resp.content.readuntil(b"\n\n")  # the first content chunk
        resp.close()
    [row] = await proxy.wait_rows(1)
    assert row["outcome"] == "client_disconnected" and row["status"] == 499
    assert row["ttft_ms"] is not None and row["ttft_ms"] < row["duration_ms"] < 1500
    assert row["prompt_tokens"] is None, "cut before the usage chunk: unknown, not 0"


@pytest.mark.parametrize("usage", [False, True])
async def test_sync_sdk_closing_right_after_done_is_complete(proxy: Proxy, usage: bool) -> None:
    """The stock sync openai SDK closes its connection as soon as it reads [DONE]; the upstream's end of
    body comes 20 ms later. The client had the whole answer: complete, 200, never 499."""

    def consume() -> str:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=API_KEY, max_retries=0)
        extra = {"stream_options": {"include_usage": True}} if usage else {}
        stream = client.chat.completions.create(
            model="fake-model",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-fake-eof-delay-ms": "20"},
            **extra,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        client.close()
        return text

    texts = [await asyncio.to_thread(consume) for _ in range(5)]
    assert all(t == texts[0] and t for t in texts)
    rows = await proxy.wait_rows(5)
    assert {(r["outcome"], r["status"]) for r in rows} == {("complete", 200)}, rows
    assert all(r["completion_tokens"] for r in rows), "usage recorded, asked for or not"


@pytest.mark.parametrize(
    ("model", "outcome", "error"),
    [
        ("fake-error-midstream", "upstream_error_event", "provider overloaded mid-generation"),
        ("fake-cut", "upstream_cut", None),
    ],
)
async def test_upstream_failure_mid_stream(
    proxy: Proxy, model: str, outcome: str, error: str | None, fault_report: FaultReport
) -> None:
    received: list[str] = []
    # The SDK raises on both: an `error` event, and a connection cut before the end of the stream.
    with pytest.raises(openai.APIError):
        stream = await proxy.client().chat.completions.create(model=model, messages=MESSAGES, stream=True)
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    [row] = await proxy.rows()
    fault_report.add(
        f"upstream {'resets the connection' if model == 'fake-cut' else 'sends an error event'} mid-stream",
        1,
        0,
        "the bytes sent, then " + ("a cut connection (as direct)" if model == "fake-cut" else "that event"),
    )
    assert row["outcome"] == outcome
    assert row["status"] == 200
    if error:
        assert row["error"] == error
    else:
        assert row["error"]
    assembled = ANY_DECODER.decode((await proxy.bodies())[row["id"]]["assembled"])
    assert assembled["choices"][0]["message"]["content"].startswith("".join(received[:2]))


async def test_unreachable_upstream_is_502_and_recorded(start_proxy: ProxyFactory, fault_report: FaultReport) -> None:
    proxy = await start_proxy("http://127.0.0.1:9/v1")
    with pytest.raises(openai.APIStatusError) as err:
        await proxy.client().chat.completions.create(model="fake-model", messages=MESSAGES)
    assert err.value.status_code == 502
    assert err.value.body["type"] == "proxy_error" and err.value.body["code"] == "upstream_unreachable"
    assert "upstream 'default' (http://127.0.0.1:9/v1) unreachable" in err.value.body["message"]
    [row] = await proxy.rows()
    fault_report.add("upstream refuses connections", 1, 0, "502, OpenAI error shape, upstream named")
    assert row["status"] == 502 and row["outcome"] == "upstream_unreachable" and row["upstream_status"] is None


async def test_upstream_timeout_is_504_and_recorded(start_proxy: ProxyFactory, fault_report: FaultReport) -> None:
    proxy = await start_proxy(upstream={"read_timeout": 0.2})
    client = proxy.client(default_headers={"x-fake-delay-ms": "1000"})
    started = time.perf_counter()
    with pytest.raises(openai.APIStatusError) as err:
        await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert time.perf_counter() - started < 0.9
    assert err.value.status_code == 504 and err.value.body["code"] == "upstream_timeout"
    # A stream that stalls after it started cannot become a 504: the client's connection is cut instead.
    with pytest.raises(openai.APIConnectionError):
        stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
        [c async for c in stream]
    rows = await proxy.rows()
    fault_report.add("upstream stalls past the read timeout", 2, 2 - len(rows), "504 before headers; cut stream after")
    assert [(r["status"], r["outcome"]) for r in rows] == [(504, "upstream_timeout"), (200, "upstream_timeout")]


async def test_gzip_body_passes_compressed_and_is_stored_decoded(proxy: Proxy) -> None:
    body = {"model": "fake-model", "messages": MESSAGES}
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        headers = {**AUTH, "x-fake-gzip": "1", "Accept-Encoding": "gzip"}
        async with http.post(f"{proxy.url}/v1/chat/completions", json=body, headers=headers) as resp:
            raw = await resp.read()
            assert resp.headers["Content-Encoding"] == "gzip"
    assert raw[:2] == b"\x1f\x8b", "the client got the upstream's gzip bytes untouched"
    [row] = await proxy.rows()
    stored = (await proxy.bodies())[row["id"]]
    assert ANY_DECODER.decode(stored["response_body"])["object"] == "chat.completion"
    assert "content-encoding" not in stored["response_headers"]
    assert row["total_tokens"] is not None


async def test_named_upstream_and_injected_api_key(start_proxy: ProxyFactory, upstream: TestServer) -> None:
    url = str(upstream.make_url("/v1"))
    proxy = await start_proxy(upstreams={"second": {"url": url, "api_key": "sk-injected-KEY-987"}})
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{proxy.url}/second/v1/chat/completions", json={"model": "fake-model", "messages": MESSAGES}
        ) as resp:
            assert resp.status == 200
        async with http.post(
            f"{proxy.url}/second/v1/chat/completions", json={"model": "fake-model", "messages": MESSAGES}, headers=AUTH
        ) as resp:
            assert resp.status == 200
        async with http.get(f"{proxy.url}/nope/v1/models") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "unknown_upstream"
    seen = [r["headers"].get("Authorization") for r in upstream.app[fake_upstream.REQUESTS]]
    assert seen == ["Bearer sk-injected-KEY-987", f"Bearer {API_KEY}"], "injected only when the client sent none"
    rows = await proxy.rows()
    assert [r["upstream"] for r in rows] == ["second", "second", "nope"]
    assert rows[0]["key_fingerprint"] != rows[1]["key_fingerprint"]


async def test_a_stream_longer_than_the_record_cap_keeps_its_head_and_whole_usage(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(max_record_bytes=10_000)
    body = chat_body("fake-model", stream_options={"include_usage": True})
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{proxy.url}/v1/chat/completions", json=body, headers={**AUTH, "x-fake-events": "3000"}) as resp,
    ):
        received = await resp.read()
    assert len(received) > 500_000, "long enough to be decoded on the way (past the tap's LAG)"
    [row] = await proxy.rows()
    stored = (await proxy.bodies())[row["id"]]
    assert stored["response_body"] == received[:10_000]
    assert stored["response_truncated"] is True and stored["response_bytes"] == len(received)
    assert max(end for _, end in stored["stream_chunks"]) == 10_000
    assert row["outcome"] == "complete" and row["finish_reason"] == "stop" and row["ttft_ms"] is not None
    assert row["completion_tokens"] == 3000 and row["usage_source"] == "provider"
    content = ANY_DECODER.decode(stored["assembled"])["choices"][0]["message"]["content"]
    assert 0 < len(content) <= 10_000 + 100, "the assembled text is capped the same way"


async def test_a_stream_within_the_cap_is_kept_whole(proxy: Proxy) -> None:
    stream = await proxy.client().chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    [c async for c in stream]
    [row] = await proxy.rows()
    stored = (await proxy.bodies())[row["id"]]
    assert stored["response_truncated"] is False and stored["response_bytes"] == len(stored["response_body"])


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_a_body_that_is_no_event_stream_left_by_its_client_is_client_left(
    start_proxy: ProxyFactory, declared: bool
) -> None:
    """A JSON body sent in pieces (chunked, or of a declared length the proxy reads whole): the client leaves
    between two reads, having had all that came so far. Not the whole answer: 499, client_disconnected."""
    first, rest = b'{"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": "', b'hi"}}]}'
    started, gate = asyncio.Event(), asyncio.Event()

    async def in_pieces(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declared:
            resp.content_length = len(first + rest)
        await resp.prepare(request)
        await resp.write(first)
        started.set()
        await gate.wait()
        await resp.write(rest)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", in_pieces)
    async with TestServer(app) as upstream:
        proxy = await start_proxy(str(upstream.make_url("/v1")))
        body = {"model": "m", "messages": MESSAGES}
        async with aiohttp.ClientSession() as http:
            # A body of a declared length is read whole before the client gets any of it, headers included.
            sent = asyncio.create_task(http.post(f"{proxy.url}/v1/chat/completions", json=body, headers=AUTH))
            await started.wait()
            if declared:
                sent.cancel()
            else:
                resp = await sent
                assert await resp.content.readexactly(len(first)) == first
                resp.close()
        [row] = await proxy.wait_rows(1)
        gate.set()
    assert (row["outcome"], row["status"], row["upstream_status"]) == ("client_disconnected", 499, 200)
