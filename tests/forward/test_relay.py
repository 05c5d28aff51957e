"""The relay: framing byte for byte as direct, backpressure against a slow client, gzip as sent, every ending.

Every test of ``test_tee`` runs with the relay on as well as off (its ``relay`` fixture): the endings the tee
is held to are the relay's too. The tests written here check what only the relay does; each asserts that the
body really went through it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.forward import hooks, relay
from proxy.record.tap import BodyTap
from tests.support import API_KEY, Proxy, ProxyFactory

EVENTS = [b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"w%d "}}]}\n\n' % i for i in range(40)]
EVENTS.append(b"data: [DONE]\n\n")
SSE = b"".join(EVENTS)
GZIPPED = gzip.compress(SSE, mtime=0)
FLOOD_CHUNK = 64 << 10
FLOOD_TOTAL = 64 << 20
WRITTEN = web.AppKey("written", list)
MESSAGES = [{"role": "user", "content": "one two three four five six"}]


@pytest.fixture
async def proxy(start_proxy: ProxyFactory) -> Proxy:
    return await start_proxy(server={"relay": True})


@pytest.fixture
def relayed(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each body was hooked (the real ``attach``, observed)."""
    seen: list[bool] = []
    attach = hooks.attach

    def observed(*args: Any) -> hooks.Hooked | None:
        hooked = attach(*args)
        seen.append(hooked is not None)
        return hooked

    monkeypatch.setattr(hooks, "attach", observed)
    return seen


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i, event in enumerate(EVENTS):
        await response.write(event)
        if i % 8 == 0:
            await asyncio.sleep(0.002)  # some reads hold one event, some several
    await response.write_eof()
    return response


async def _length(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    response.content_length = len(SSE)
    await response.prepare(request)
    for event in EVENTS:
        await response.write(event)
        await asyncio.sleep(0)
    await response.write_eof()
    return response


USAGE_EVENT = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":40,"total_tokens":43}}\n\n'
WITH_USAGE = b"".join(EVENTS[:-1]) + USAGE_EVENT + EVENTS[-1]


async def _length_usage(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    response.content_length = len(WITH_USAGE)
    await response.prepare(request)
    await response.write(WITH_USAGE)
    await response.write_eof()
    return response


async def _gzip(request: web.Request) -> web.StreamResponse:
    packed = GZIPPED
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"})
    await response.prepare(request)
    for i in range(0, len(packed), 100):
        await response.write(packed[i : i + 100])
        await asyncio.sleep(0.001)
    await response.write_eof()
    return response


async def _cut(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in EVENTS[:5]:
        await response.write(event)
        await asyncio.sleep(0.01)
    assert request.transport is not None
    request.transport.abort()  # mid-stream, without the end marker
    return response


async def _flood(request: web.Request) -> web.StreamResponse:
    written = request.app[WRITTEN]
    sse = request.headers.get("X-Shape") == "events"  # 64 KiB chat events, never the answer's end
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream" if sse else "application/octet-stream"})
    await response.prepare(request)
    chunk = b"data: " + b"x" * (FLOOD_CHUNK - 8) + b"\n\n" if sse else b"x" * FLOOD_CHUNK
    for _ in range(FLOOD_TOTAL // FLOOD_CHUNK):
        await response.write(chunk)
        written[0] += len(chunk)
    await response.write_eof()
    return response


@pytest.fixture
async def shaped(aiohttp_server: Callable[..., Any]) -> AsyncIterator[TestServer]:
    app = web.Application()
    app[WRITTEN] = [0]
    shapes = {
        "chunked": _chunked,
        "length": _length,
        "length-usage": _length_usage,
        "gzip": _gzip,
        "cut": _cut,
        "events": _flood,
    }

    async def chat(request: web.Request) -> web.StreamResponse:
        return await shapes[request.headers["X-Shape"]](request)

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/files/flood/content", _flood)
    yield await aiohttp_server(app)


def _request(path: str, body: bytes = b"", shape: str = "") -> bytes:
    method = "POST" if body else "GET"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n"
        f"X-Shape: {shape}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(port: int, raw: bytes) -> tuple[dict[str, str], bytes]:
    """One request over a raw connection: the response's headers (lower-cased) and its body as framed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


def _dechunk(body: bytes) -> bytes:
    out, rest = [], body
    while True:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            assert rest == b"\r\n", "one last empty chunk, no trailers"
            return b"".join(out)
        out.append(rest[:n])
        assert rest[n : n + 2] == b"\r\n"
        rest = rest[n + 2 :]


STREAM_REQUEST = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


@pytest.fixture
def shaped_proxy(start_proxy: ProxyFactory, shaped: TestServer) -> ProxyFactory:
    """A proxy in front of the shaped upstream, the relay on unless ``relay=False``; other keywords are settings."""

    async def start(relay: bool = True, **settings: Any) -> Proxy:
        return await start_proxy(str(shaped.make_url("/v1")), server={"relay": relay}, **settings)

    return start


async def _stream(proxy: Proxy, shape: str) -> tuple[dict[str, str], bytes]:
    """A chat stream through ``proxy``, which the shaped upstream answers in ``shape``."""
    return await _exchange(proxy.server.port, _request("/v1/chat/completions", STREAM_REQUEST, shape))


@pytest.mark.parametrize("shape", ["chunked", "length"])
async def test_framing_and_bytes_as_direct(
    shaped_proxy: ProxyFactory, shaped: TestServer, relayed: list[bool], shape: str
) -> None:
    # No usage option added: nothing may be hidden, so the upstream's framing is kept (see the next test).
    proxy = await shaped_proxy(inject_stream_usage=False)
    raw = _request("/v1/chat/completions", STREAM_REQUEST, shape)
    direct_headers, direct = await _exchange(shaped.port, raw)
    headers, body = await _exchange(proxy.server.port, raw)
    assert relayed == [True]
    if shape == "chunked":
        assert headers["transfer-encoding"] == direct_headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
        assert _dechunk(body) == _dechunk(direct) == SSE
    else:
        assert headers["content-length"] == direct_headers["content-length"] == str(len(SSE))
        assert "transfer-encoding" not in headers
        assert body == direct == SSE
    [row] = await proxy.rows()
    assert row["outcome"] == "complete" and row["status"] == 200
    assert (await proxy.bodies())[row["id"]]["response_body"] == SSE


@pytest.mark.parametrize("relay", [True, False])
async def test_a_stream_of_declared_length_whose_usage_chunk_is_hidden_is_sent_chunked(
    shaped_proxy: ProxyFactory, relay: bool
) -> None:
    # The client did not ask for usage, so the proxy hides the usage chunk it asked for: the body is shorter
    # than the upstream's Content-Length, which must not reach the client (it would wait for the rest).
    proxy = await shaped_proxy(relay=relay)
    headers, body = await _stream(proxy, "length-usage")
    assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"
    assert _dechunk(body) == SSE  # every event but the usage chunk
    [row] = await proxy.rows()
    assert row["outcome"] == "complete" and row["completion_tokens"] == 40


async def test_gzip_stream_is_forwarded_as_sent_and_recorded_decoded(
    shaped_proxy: ProxyFactory, relayed: list[bool]
) -> None:
    # No usage option added, so nothing must be hidden: the encoded bytes go through the relay untouched.
    proxy = await shaped_proxy(inject_stream_usage=False)
    headers, body = await _stream(proxy, "gzip")
    assert relayed == [True]
    assert headers["content-encoding"] == "gzip"
    assert _dechunk(body) == GZIPPED
    [row] = await proxy.rows()
    assert row["outcome"] == "complete"
    assert (await proxy.bodies())[row["id"]]["response_body"] == SSE


async def test_an_encoded_stream_whose_usage_chunk_is_hidden_goes_through_the_tee(
    shaped_proxy: ProxyFactory, relayed: list[bool]
) -> None:
    proxy = await shaped_proxy()
    headers, body = await _stream(proxy, "gzip")
    assert relayed == []  # never offered to the relay: the client gets it decoded
    assert "content-encoding" not in headers and _dechunk(body) == SSE


async def test_injected_usage_chunk_is_hidden_through_the_relay(proxy: Proxy, relayed: list[bool]) -> None:
    client = proxy.client()
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    chunks = [c async for c in stream]
    assert relayed == [True]
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    [row] = await proxy.rows()
    assert row["usage_source"] == "provider" and row["completion_tokens"] > 0


def _proxy_transports(proxy: Proxy) -> list[asyncio.Transport]:
    server = proxy.server.runner.server  # type: ignore[union-attr]
    return [h.transport for h in server.connections if h.transport is not None]


async def test_a_fast_upstream_is_relayed_in_bounded_steps(
    shaped_proxy: ProxyFactory, relayed: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # However much the upstream's reads bring before the scheduled flush runs, the tap and the usage
    # filter take it a bounded piece at a time: no step holds the loop for a whole burst.
    fed: list[int] = []
    feed = BodyTap.feed

    def observed(self: BodyTap, data: bytes) -> bool:
        fed.append(len(data))
        return feed(self, data)

    monkeypatch.setattr(BodyTap, "feed", observed)
    proxy = await shaped_proxy(max_record_bytes=1 << 20)
    _, body = await _stream(proxy, "events")
    assert relayed == [True] and len(_dechunk(body)) == FLOOD_TOTAL
    # One flush takes what came until FLUSH_BYTES were reached: at most that plus one of the parser's pieces.
    assert sum(fed) == FLOOD_TOTAL and max(fed) < relay.FLUSH_BYTES + FLOOD_CHUNK + 16, max(fed)


async def test_slow_client_pauses_the_upstream_and_memory_stays_bounded(
    shaped_proxy: ProxyFactory, shaped: TestServer, relayed: list[bool]
) -> None:
    proxy = await shaped_proxy(max_record_bytes=1 << 20)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(_request("/v1/files/flood/content"))
    await reader.readuntil(b"\r\n\r\n")
    written = shaped.app[WRITTEN]
    # The client reads nothing more: the upstream must stop being read once the buffers between are full.
    last, still = -1, 0
    for _ in range(100):
        await asyncio.sleep(0.1)
        still = still + 1 if written[0] == last else 0
        last = written[0]
        if still >= 5:
            break
    assert still >= 5, f"the upstream kept writing: {written[0]} bytes"
    assert written[0] < FLOOD_TOTAL // 2
    assert relayed == [True]
    assert all(t.get_write_buffer_size() < 1 << 20 for t in _proxy_transports(proxy))
    received = 0
    while data := await reader.read(1 << 20):  # now the client reads: everything arrives
        received += len(data)
    writer.close()
    assert written[0] == FLOOD_TOTAL
    assert received > FLOOD_TOTAL  # the body and its chunk framing
    [row] = await proxy.rows()
    assert row["outcome"] == "complete"
    assert (await proxy.bodies())[row["id"]]["response_bytes"] == FLOOD_TOTAL


async def test_upstream_cut_mid_stream_cuts_the_client(shaped_proxy: ProxyFactory, relayed: list[bool]) -> None:
    proxy = await shaped_proxy()
    _, body = await _stream(proxy, "cut")
    assert relayed == [True]
    assert body.startswith(b"%x\r\n" % len(EVENTS[0])) and not body.endswith(b"0\r\n\r\n"), "cut, as direct"
    [row] = await proxy.wait_rows(1)
    assert row["outcome"] == "upstream_cut" and "mid-response" in row["error"]
    assert (await proxy.bodies())[row["id"]]["response_body"] == b"".join(EVENTS[:5])


async def test_client_leaving_mid_stream_is_recorded_with_what_it_got(
    shaped_proxy: ProxyFactory, shaped: TestServer, relayed: list[bool]
) -> None:
    proxy = await shaped_proxy(max_record_bytes=1 << 20)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    writer.write(_request("/v1/chat/completions", STREAM_REQUEST, "events"))
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(1 << 20)
    writer.transport.abort()
    [row] = await proxy.wait_rows(1)
    assert relayed == [True]
    assert row["outcome"] == "client_disconnected" and row["status"] == 499
    body = (await proxy.bodies())[row["id"]]
    # What the client got: ``delivered_bytes``, or (None) every byte the record says passed.
    got = body["delivered_bytes"] if body["delivered_bytes"] is not None else body["response_bytes"]
    assert 1 << 20 <= got <= body["response_bytes"] < FLOOD_TOTAL
    assert shaped.app[WRITTEN][0] < FLOOD_TOTAL, "the upstream stopped when the client left"


async def test_the_read_timeout_is_the_relay_s_while_hooked_and_given_back_after(
    start_proxy: ProxyFactory, relayed: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Events 0.1 s apart with a 0.25 s read timeout: the relay's one timer comes due while reads keep
    # coming and must move on, not fire; aiohttp's per-read timer is off meanwhile and its setting restored.
    kept: list[float | None] = []
    release = hooks.Hooked.release

    def observed(self: hooks.Hooked) -> None:
        kept.append(self.upstream.read_timeout if self.upstream is not None else None)
        release(self)
        kept.append(self.upstream.read_timeout if self.upstream is not None else None)

    monkeypatch.setattr(hooks.Hooked, "release", observed)
    proxy = await start_proxy(server={"relay": True}, upstream={"read_timeout": 0.25})
    client = proxy.client(default_headers={"x-fake-delay-ms": "100"})
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    chunks = [c async for c in stream]
    assert relayed == [True] and len(chunks) >= 4
    [row] = await proxy.wait_rows(1)
    assert row["outcome"] == "complete"
    assert kept[:2] == [None, 0.25]
