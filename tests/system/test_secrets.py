"""Secrets are never stored, logged or echoed, and a client can opt out of body storage; field by field,
in the proxy of the test process (tests/system/test_secrets_artifacts.py searches all a real `proxy serve` writes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.forward.state import STATE
from proxy.record.redact import fingerprint
from proxy.replay import export, har
from tests.support import API_KEY, Proxy, upstream_requests
from tests.support.traffic import admin_get

MESSAGES = [{"role": "user", "content": "one two three four five six"}]


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


# Keys in the places a client can put them that are not headers: a Gemini-style query key, `user`, a session.
QUERY_KEY = "AIzaSyD-0123456789abcdefghijklmnopqrstu"
USER_KEY = "sk-user-0123456789abcdefghijklmnop"
SESSION_KEY = "sk-sess-0123456789abcdefghijklmnop"
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


async def _query_upstream(aiohttp_server: Callable[..., Any]) -> tuple[TestServer, list[str]]:
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.rel_url.raw_query_string)
        return web.json_response(COMPLETION)

    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", answer)
    return await aiohttp_server(app), seen


async def _post(url: str, body: dict[str, Any]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        return resp.status, await resp.text()


async def test_query_keys_reach_the_upstream_as_sent_and_are_kept_only_as_fingerprints(
    start_proxy: Callable[..., Any], aiohttp_server: Callable[..., Any]
) -> None:
    upstream, seen = await _query_upstream(aiohttp_server)
    proxy = await start_proxy(str(upstream.make_url("/v1")))
    body = {"model": "m", "user": USER_KEY, "messages": MESSAGES}
    status, _ = await _post(f"{proxy.url}/s/{SESSION_KEY}/v1/chat/completions?alt=x&key={QUERY_KEY}", body)
    assert status == 200 and seen == [f"alt=x&key={QUERY_KEY}"], "the upstream gets the query as sent"
    [row] = await proxy.rows()
    assert row["key_fingerprint"] == fingerprint(proxy.server.app[STATE].secret, QUERY_KEY)
    assert row["end_user"] == "sk-" + "*" * (len(USER_KEY) - 3)
    assert row["session_id"] == "sk-" + "*" * (len(SESSION_KEY) - 3)
    _, _, text = await admin_get(proxy, f"/_proxy/exchanges/{row['id']}")
    stored = repr(await proxy.rows()) + repr(await proxy.bodies()) + text
    for key in (QUERY_KEY, USER_KEY, SESSION_KEY):
        assert key not in stored


async def test_malformed_upstream_answers_never_echo_the_query_key(
    start_proxy: Callable[..., Any], malformed_upstream: str
) -> None:
    proxy = await start_proxy(malformed_upstream)
    errors = []
    for _ in range(3):  # one of each malformed answer
        status, text = await _post(f"{proxy.url}/s/bad/v1/chat/completions?key={QUERY_KEY}", {"model": "m"})
        assert status == 502 and "key=[redacted]" in text, text
        errors.append(text)
    rows = await proxy.rows()
    assert len(rows) == 3 and all("key=[redacted]" in r["error"] for r in rows)
    records = await export.session_records(proxy.database.engine, "bad")
    exported = export.jsonl("bad", records) + json.dumps(har.to_har(records, {}, "test")).encode()
    _, _, listing = await admin_get(proxy, "/_proxy/exchanges?limit=10")
    everything = "".join(errors) + repr(rows) + repr(await proxy.bodies()) + listing + exported.decode()
    assert QUERY_KEY not in everything
