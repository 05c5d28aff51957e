"""Secrets are never stored or logged, and a client can opt out of body storage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.support import API_KEY, Proxy, upstream_requests

MESSAGES = [{"role": "user", "content": "hello"}]


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


MESSAGES = [{"role": "user", "content": "one two three four five six"}]


async def test_no_secret_reaches_the_database_file(proxy: Proxy, tmp_path: Path) -> None:
    client = proxy.client(default_headers={"X-Api-Key": API_KEY, "Cookie": f"session={API_KEY}"})
    await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    [c async for c in stream]
    rows = await proxy.rows()
    assert len(rows) == 2 and rows[0]["key_fingerprint"] == rows[1]["key_fingerprint"]
    if proxy.database.path is None:
        dump = repr(rows) + repr(await proxy.bodies())
        assert API_KEY not in dump
        return
    await proxy.database.engine.dispose()  # checkpoint the WAL so the file holds everything
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("proxy.db*"))
    assert rows[0]["id"].encode() in raw
    assert API_KEY.encode() not in raw
    assert API_KEY[8:24].encode() not in raw
