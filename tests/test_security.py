"""Never an open proxy; secrets never stored or logged; per-request opt-out of body storage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.apis.codec import ANY_DECODER
from proxy.record.redact import BodyRedactor
from proxy.testing import fake_upstream
from tests.conftest import API_KEY, Proxy, upstream_requests

MESSAGES = [{"role": "user", "content": "hello"}]


async def raw_http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), timeout=5)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


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


async def test_secrets_never_reach_database_logs_or_errors(
    start_proxy: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy = await start_proxy()
    leaky = f"please remember my key {API_KEY} and Bearer {API_KEY}"
    client = proxy.client(default_headers={"X-Api-Key": API_KEY, "Cookie": f"s={API_KEY}"})
    await client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": leaky}])
    stream = await client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": leaky}], stream=True
    )
    echoed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert API_KEY in echoed, "the client still gets exactly what the upstream sent"
    dead = await start_proxy("http://127.0.0.1:9/v1")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{dead.url}/v1/chat/completions", json={"model": "m"}, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as resp,
    ):
        error_text = await resp.text()
    rows = await proxy.rows() + await dead.rows()
    bodies = {**(await proxy.bodies()), **(await dead.bodies())}
    stored = repr(rows) + repr(bodies)
    assert API_KEY not in stored and API_KEY[3:20] not in stored
    assert API_KEY not in error_text
    assert API_KEY not in caplog.text
    # Masked with the same length, so the stored stream keeps its byte offsets.
    body = next(b for b in bodies.values() if b["stream_chunks"])
    assert body["stream_chunks"][-1][1] == len(body["response_body"])
    assert b"sk-" + b"*" * (len(API_KEY) - 3) in body["response_body"]


async def test_no_store_header_keeps_usage_but_not_bodies(proxy: Proxy, upstream: TestServer) -> None:
    client = proxy.client(default_headers={"X-Proxy-No-Store": "1", "X-Proxy-Session": "private"})
    completion = await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    [row] = await proxy.rows()
    assert row["total_tokens"] == completion.usage.total_tokens and row["session_id"] == "private"
    body = (await proxy.bodies())[row["id"]]
    assert body["request_body"] is None and body["response_body"] is None and body["assembled"] is None
    sent = upstream_requests(upstream)[0]["headers"]
    assert "X-Proxy-No-Store" not in sent and "X-Proxy-Session" not in sent, "control headers stay here"


def test_body_redactor_rules() -> None:
    redact = BodyRedactor()
    data = b'{"a": "sk-or-v1-0123456789abcdef0123", "b": "task-0123456789abcdef0123", "c": "sk-short"}'
    out = redact(data)
    assert len(out) == len(data) and ANY_DECODER.decode(out)["a"] == "sk-" + "*" * 26
    assert b"task-0123456789abcdef0123" in out and b"sk-short" in out
    assert BodyRedactor([])(data) == data
    assert BodyRedactor([r"secret-\d+"])(b"x secret-12345 y") == b"x sec********* y"
    bearer = b'{"h": "Authorization: Bearer abcdefghijklmnop0123", "l": "BEARER abcdefghijklmnop0123"}'
    assert redact(bearer) == bearer.replace(b"abcdefghijklmnop0123", b"abc" + b"*" * 17)
    # A capturing group masks only the group; the literal before it stays readable.
    assert BodyRedactor([r"token=(\w{6,})"])(b"a token=abcdefgh b") == b"a token=abc***** b"
