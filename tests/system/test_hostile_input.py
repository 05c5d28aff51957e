"""Hostile and malformed input: request targets cannot pick the upstream, limits, bad bodies and session ids,
malformed request heads and heads that never end; the proxy stays up and records each request once."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.apis.codec import ANY_DECODER
from proxy.testing import fake_upstream
from tests.support import API_KEY, FaultReport, Proxy, ProxyFactory, upstream_requests
from tests.support.http import raw_http, status_of


@pytest.fixture
async def evil(aiohttp_server: Callable[..., Any]) -> TestServer:
    """Where an attacker would like the proxy to send traffic; it must never see a request."""
    return await aiohttp_server(fake_upstream.create_app())


async def test_request_targets_and_headers_cannot_pick_the_upstream(
    proxy: Proxy, upstream: TestServer, evil: TestServer
) -> None:
    evil_host = f"127.0.0.1:{evil.port}"
    port = proxy.server.port
    attempts = [
        f"GET http://{evil_host}/v1/models HTTP/1.1\r\nHost: {evil_host}\r\n\r\n",  # absolute-form target
        f"GET /v1/models HTTP/1.1\r\nHost: {evil_host}\r\n\r\n",
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Forwarded-Host: {evil_host}\r\nX-Forwarded-Proto: http\r\n"
        f"Forwarded: host={evil_host}\r\n\r\n",
        f"GET /v1//{evil_host}/v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/../../v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/%2e%2e/%2e%2e/v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/models/..%2F..%2Fadmin HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v1/@{evil_host}/models HTTP/1.1\r\nHost: x\r\n\r\n",
        f"CONNECT {evil_host} HTTP/1.1\r\nHost: {evil_host}\r\n\r\n",
    ]
    for attempt in attempts:
        response = await raw_http(port, attempt.encode())
        assert response.startswith(b"HTTP/1.1 "), attempt
        status = status_of(response)
        assert status == 200 or 400 <= status < 500, (attempt, response[:200])
    assert upstream_requests(evil) == [], "the attacker's server saw a request"
    # Whatever reached an upstream reached the configured one, below its /v1.
    assert all(r["path"].startswith("/v1/") for r in upstream_requests(upstream))


async def test_admin_routes_are_not_reachable_through_the_forwarder(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/v1/_proxy/health", "/s/x/v1/_proxy/health", "/v1/_proxy/dashboard"):
            async with http.get(proxy.url + path) as resp:
                body = await resp.read()
                assert b'"recorder"' not in body, path
    # They went upstream like any other path below /v1 (and got the upstream's 404).
    rows = await proxy.rows()
    assert [r["path"] for r in rows] == ["/v1/_proxy/health", "/v1/_proxy/health", "/v1/_proxy/dashboard"]
    assert all(r["upstream_status"] == 404 for r in rows)


AUTH = {"Authorization": f"Bearer {API_KEY}"}


URL = "/v1/chat/completions"


async def post(proxy: Proxy, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(proxy.url + URL, data=data, headers={**AUTH, **(headers or {})}) as resp,
    ):
        return resp.status, await resp.read()


async def test_body_over_limit_is_413_without_reading_the_rest(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(max_body_bytes=1000)
    status, body = await post(proxy, b'{"model": "x", "pad": "' + b"a" * 5000 + b'"}')
    assert status == 413
    error = ANY_DECODER.decode(body)["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"
    # A declared length far past the limit is refused before a single body byte is sent.
    head = f"POST {URL} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    assert status_of(await raw_http(proxy.server.port, head.encode())) == 413
    rows = await proxy.rows()
    assert [(r["status"], r["outcome"]) for r in rows] == [(413, "rejected"), (413, "rejected")]


async def test_a_body_that_stops_halfway_is_408_recorded_and_closed(
    start_proxy: ProxyFactory, upstream: TestServer
) -> None:
    proxy = await start_proxy(body_timeout=0.6)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    head = f"POST {URL} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    writer.write(head.encode() + b'{"model": "x", ')  # 15 of the 100 bytes, then nothing more
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
    answered = time.monotonic() - started
    # Then aiohttp reads what may still come for its lingering time (10 s), so a client gets the answer
    # rather than a reset, and closes the connection.
    closed, _ = await _closed_within(reader, 20, started)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer, answer
    assert answered < 4 and closed < 15, f"answered after {answered:.1f} s, closed after {closed:.1f} s"
    error = ANY_DECODER.decode(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert (await proxy.client().models.list()).data, "still serving"
    rows = await proxy.rows()
    assert [(r["status"], r["outcome"]) for r in rows if r["path"] == URL] == [(408, "rejected")]
    assert not [r for r in upstream_requests(upstream) if r["path"] == URL], "nothing half-read was forwarded"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b'{"model": "x", "messages": [', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"model=x&messages=hi", "application/x-www-form-urlencoded"),
        (b"", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'{"model": 12, "stream": "yes", "user": []}', "application/json"),
    ],
)
async def test_malformed_bodies_are_forwarded_for_the_upstream_to_judge(
    proxy: Proxy, data: bytes, content_type: str, fault_report: FaultReport
) -> None:
    status, body = await post(proxy, data, {"Content-Type": content_type})
    assert status == 400 and ANY_DECODER.decode(body)["error"]["type"] == "invalid_request_error"
    [row] = await proxy.rows()
    fault_report.add("client sends malformed JSON, non-UTF-8, wrong types", 1, 0, "the upstream's 400")
    assert row["status"] == 400 and row["upstream_status"] == 400
    assert (await proxy.bodies())[row["id"]]["request_body"] == data


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
    ],
)
async def test_absurd_requests_get_4xx_and_the_proxy_stays_up(
    proxy: Proxy, request_bytes: bytes, fault_report: FaultReport
) -> None:
    response = await raw_http(proxy.server.port, request_bytes)
    fault_report.add("client sends huge or malformed headers and request lines", 1, 0, "a 4xx from the proxy")
    assert 400 <= status_of(response) < 500
    models = await proxy.client().models.list()
    assert models.data


@pytest.mark.parametrize(
    ("session", "ok"),
    [
        ("suite-1", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("../x", False),
        ("a b", False),
        ("ü", False),
        ("", False),
        ("x;DROP TABLE", False),
    ],
)
async def test_session_ids_are_validated(proxy: Proxy, session: str, ok: bool) -> None:
    head = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Proxy-Session: {session}\r\n\r\n".encode()
    assert (status_of(await raw_http(proxy.server.port, head)) == 200) is ok
    [row] = await proxy.rows()
    assert row["session_id"] == (session if ok else None)
    assert row["outcome"] == ("complete" if ok else "rejected")


async def test_a_key_and_a_header_that_are_not_utf8_are_answered_and_recorded(proxy: Proxy) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Authorization: Bearer sk-\xff\xfesecret\r\nX-Odd: caf\xe9\r\n"
    head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    assert status_of(await raw_http(proxy.server.port, head + body)) == 200
    [row] = await proxy.wait_rows(1)
    assert row["status"] == 200 and row["outcome"] == "complete"
    assert row["key_fingerprint"].startswith("fp_")
    assert b"secret" not in json.dumps(row, default=str).encode()


@pytest.mark.parametrize(
    ("model", "stream", "status", "outcome"),
    [
        ("fake-html", False, 200, "complete"),
        ("fake-text-error", False, 502, "complete"),
        ("fake-html", True, 200, "complete"),
        ("fake-json-for-stream", True, 200, "complete"),
    ],
)
async def test_upstream_returns_the_wrong_kind_of_body(
    proxy: Proxy, model: str, stream: bool, status: int, outcome: str, fault_report: FaultReport
) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": stream}
    async with aiohttp.ClientSession() as http, http.post(proxy.url + URL, json=body, headers=AUTH) as resp:
        received = await resp.read()
        assert resp.status == status
    [row] = await proxy.rows()
    assert row["status"] == status and row["outcome"] == outcome
    stored = (await proxy.bodies())[row["id"]]
    fault_report.add(f"upstream answers {model.removeprefix('fake-')} (stream={stream})", 1, 0, "the bytes as sent")
    assert stored["response_body"] == received, "the client got the bytes as sent, and so did the record"
    if model == "fake-json-for-stream":
        assert row["total_tokens"] == 4 and row["usage_source"] == "provider"


async def test_event_larger_than_the_filter_limit_passes_through(
    start_proxy: ProxyFactory, fault_report: FaultReport
) -> None:
    proxy = await start_proxy(max_event_bytes=64 * 1024)
    body = {
        "model": "fake-huge-event",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "event_bytes": 300_000,
    }
    async with aiohttp.ClientSession() as http, http.post(proxy.url + URL, json=body, headers=AUTH) as resp:
        received = await resp.read()
    assert received.endswith(b"data: [DONE]\n\n") and len(received) > 300_000
    [row] = await proxy.rows()
    fault_report.add("upstream event larger than max_event_bytes", 1, 0, "the stream as sent")
    assert row["outcome"] == "complete" and row["finish_reason"] == "stop"
    assembled = ANY_DECODER.decode((await proxy.bodies())[row["id"]]["assembled"])
    assert len(assembled["choices"][0]["message"]["content"]) == 300_000


async def test_many_concurrent_bad_requests_each_recorded_once(proxy: Proxy) -> None:
    payloads = [b"{" * i for i in range(1, 40)]
    results = await asyncio.gather(*(post(proxy, p) for p in payloads))
    assert {status for status, _ in results} == {400}
    # A handler submits its record after the answer is sent: wait for all of them, then check that no
    # second copy follows.
    await proxy.wait_rows(len(payloads), timeout=60)
    await asyncio.sleep(0.2)
    rows = await proxy.rows()
    assert len(rows) == len(payloads) == len({r["id"] for r in rows})


KEY = API_KEY.encode()
MALFORMED_WITH_KEYS = [
    # Bare LF line ends.
    b"POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer " + KEY + b"\nContent-Length: 2\n\n{}",
    # A control byte after a header value.
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY + b"\x01\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-api-key: " + KEY + b"\x7f\r\n\r\n",
    # A control byte in the query, next to a query key.
    b"GET /v1/models?key=" + KEY + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    # A bad chunk after a good head, and a request line that is not HTTP.
    b"POST /v1/x HTTP/1.1\r\nHost: x\r\napi-key: " + KEY + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n0\r\n\r\n",
    b"\x16\x03\x01 TLS? Authorization: Bearer " + KEY + b"\r\n\r\n",
]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # the HTTP parser's errors, not storage
async def test_malformed_requests_never_put_a_key_in_the_log_or_the_answer(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, aiohttp's included
    answers = [await raw_http(proxy.server.port, raw) for raw in MALFORMED_WITH_KEYS]
    for answer in answers:
        assert status_of(answer) == 400, answer
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"application/json" in head and KEY not in answer and KEY[8:24] not in answer
        error = json.loads(body)["error"]
        assert error["code"] == "bad_request" and error["message"].startswith("malformed HTTP request: "), error
    assert "malformed request from" in caplog.text
    assert API_KEY not in caplog.text and API_KEY[8:24] not in caplog.text, caplog.text
    assert (await proxy.client().models.list()).data, "still serving"


async def _closed_within(
    reader: asyncio.StreamReader, timeout: float, started: float | None = None
) -> tuple[float, bytes | None]:
    """Seconds from ``started`` (default: now) until the proxy closes the connection, and what it sent
    before (None: reset or a broken pipe, as a client still writing to a closed connection gets)."""
    started = time.monotonic() if started is None else started
    try:
        data: bytes | None = await asyncio.wait_for(reader.read(), timeout)
    except ConnectionError:  # reset, or a broken pipe seen by the trickling writer first
        data = None
    return time.monotonic() - started, data


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # a property of the server, not of storage
async def test_connections_that_never_finish_their_headers_are_closed(
    start_proxy: ProxyFactory, fault_report: FaultReport
) -> None:
    timeout, held = 1.0, 1000
    proxy = await start_proxy(header_timeout=timeout)
    port = proxy.server.port
    conns, opened = [], []
    for i in range(held):
        opened.append(time.monotonic())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if i % 3 == 1:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")  # half a head
        elif i % 3 == 2:
            writer.write(b"GET /v1/models?x=")  # then a byte every 0.1 s, never finishing
        conns.append((reader, writer))
    trickling = [w for i, (_, w) in enumerate(conns) if i % 3 == 2]

    async def trickle() -> None:
        for _ in range(int(timeout * 2 / 0.1)):
            for writer in trickling:
                if not writer.is_closing():
                    writer.write(b"a")
            await asyncio.sleep(0.1)

    trickler = asyncio.create_task(trickle())
    assert (await proxy.client().models.list()).data, "other clients are served meanwhile"
    pairs = zip(conns, opened, strict=True)
    results = await asyncio.gather(*(_closed_within(reader, timeout + 10, at) for (reader, _), at in pairs))
    trickler.cancel()
    slowest = max(seconds for seconds, _ in results)
    for writer in (w for _, w in conns):
        writer.close()
    for i, (_, data) in enumerate(results):
        assert (data is None and i % 3 == 2) or (data or b"").startswith(b"HTTP/1.1 408 "), (i, data)
    assert slowest < timeout + 5, f"held {slowest:.1f} s with header_timeout {timeout} s"
    fault_report.add(
        f"{held} connections that never finish their headers (silent, half a head, a byte every 0.1 s)",
        held,
        0,
        f"408 and closed at most {slowest:.1f} s after opening (header_timeout {timeout:g} s); others served",
    )


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_the_head_deadline_applies_to_each_request_not_to_slow_but_complete_ones(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy(header_timeout=0.6)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
    # A head sent in pieces that completes within the deadline is served; so is a second one after a pause
    # longer than the deadline (idle time between requests belongs to the keep-alive timeout).
    for pause_before in (0.0, 1.0):
        await asyncio.sleep(pause_before)
        for piece in (b"GET /v1/models HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            writer.write(piece)
            await asyncio.sleep(0.1)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 "), head
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        await reader.readexactly(int(fields[b"Content-Length"]))
    # The third request starts but never finishes its head: the deadline runs from its first byte.
    writer.write(b"GET /v1/models HTTP/1.1\r\nHo")
    seconds, data = await _closed_within(reader, 5)
    assert (data or b"").startswith(b"HTTP/1.1 408 ") and seconds < 3
    writer.close()
