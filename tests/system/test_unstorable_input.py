"""Input no database would take as it came: bytes that are not UTF-8 (or NUL) wherever a client can put
them, and values the database refuses. Recording goes on, and every such record is kept somewhere."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.support import API_KEY, FaultReport, Proxy, ProxyFactory
from tests.support.http import raw_http, status_of

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}).encode()


def _request(target: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: x", f"Authorization: Bearer {API_KEY}".encode()]
    lines += [*headers, b"Content-Type: application/json", f"Content-Length: {len(body)}".encode()]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _health(proxy: Proxy) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{proxy.url}/_proxy/health") as resp:
        return await resp.json()


async def test_bytes_that_are_not_utf8_anywhere_are_recorded_and_recording_goes_on(
    proxy: Proxy, fault_report: FaultReport
) -> None:
    port = proxy.server.port
    sent = [
        _request(b"/v1/chat/completions", b"User-Agent: caf\xe9", body=CHAT),
        _request(b"/v1/chat/completions", b"X-Proxy-Session: caf\xe9", body=CHAT),  # refused: 400, recorded
        # Raw bytes in the request target are refused by aiohttp's parser; percent escapes get through.
        _request(b"/v1/chat/completions?x=caf%E9&y=%00%FF", b"X-Note: \xff\xfe\x80", body=CHAT),
        _request(b"/s/caf%E9/v1/chat/completions", body=CHAT),
        _request(b"/v1/caf%E9%00/models", b"X-Other: a\x80b"),
    ]
    statuses = [status_of(await raw_http(port, request)) for request in sent]
    assert statuses[0] == 200 and statuses[2] == 200 and statuses[1] == 400 and statuses[3] == 400, statuses

    # A normal request after them is recorded: the writer is alive and the database took the others.
    await proxy.client().chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}])
    rows = await proxy.rows()
    fault_report.add(
        "a header byte that is not UTF-8 (also %-escaped in the query, path, session id)",
        len(sent) + 1,
        len(sent) + 1 - len(rows),
        "normal answers (400 for a bad session id); stored as \\xNN, recording goes on",
    )
    assert len(rows) == len(sent) + 1
    bodies = await proxy.bodies()
    agents = [bodies[r["id"]]["request_headers"].get("user-agent") for r in rows]
    assert "caf\\xe9" in agents, "a byte that is not UTF-8 is stored as \\xNN"
    assert "caf\\xe9" in [bodies[r["id"]]["request_headers"].get("x-proxy-session") for r in rows]
    assert "\\xff\\xfe\\x80" in [bodies[r["id"]]["request_headers"].get("x-note") for r in rows]
    assert "/v1/caf%E9\\x00/models" in [r["path"] for r in rows], "yarl keeps a %-escape that is not UTF-8"
    stats = proxy.recorder.stats
    assert stats.dropped == 0 and stats.quarantined == 0 and stats.writer_restarts == 0
    health = await _health(proxy)
    assert health["status"] == "ok" and health["writer"]["restarts"] == 0


async def test_nul_in_recorded_text_is_stored_escaped(proxy: Proxy) -> None:
    # JSON may carry NUL (\u0000) in the model and user: PostgreSQL refuses NUL in text, so it is escaped.
    body = json.dumps({"model": "fake\u0000model", "user": "u\u0000", "messages": [{"role": "user", "content": "a"}]})
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            proxy.url + "/v1/chat/completions", data=body, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as resp,
    ):
        assert resp.status == 200
    await proxy.client().models.list()
    rows = await proxy.rows()
    assert [r["model_requested"] for r in rows] == ["fake\\x00model", None]
    assert rows[0]["end_user"] == "u\\x00"
    assert proxy.recorder.stats.quarantined == 0


def _huge_usage_stream() -> bytes:
    chunk = {"id": "a", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    usage = {"id": "a", "choices": [], "usage": {"prompt_tokens": 10**23, "completion_tokens": 1, "total_tokens": 2}}
    return json.dumps(
        {
            "model": "fake-raw",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "x"}],
            "raw_sse": f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n",
        }
    ).encode()


@pytest.mark.parametrize("batch_delay", [0.3])
async def test_a_record_the_database_refuses_is_quarantined_alone(
    start_proxy: ProxyFactory, upstream: TestServer, batch_delay: float
) -> None:
    # A token count past 64 bits: neither database can store it. It shares its batch with good records.
    proxy = await start_proxy(recorder={"batch_delay": batch_delay})
    client = proxy.client()
    async with aiohttp.ClientSession() as http:
        await client.models.list()
        async with http.post(proxy.url + "/v1/chat/completions", data=_huge_usage_stream(), headers=AUTH) as resp:
            assert resp.status == 200
            await resp.read()
        await client.models.list()
    rows = await proxy.rows()
    assert len(rows) == 2, "the good records of the batch are stored"
    stats = proxy.recorder.stats
    assert stats.quarantined == 1 and stats.dropped == 0 and stats.database_ok
    [quarantine] = proxy.recorder.spool.quarantine_files()
    [line] = quarantine.read_bytes().splitlines()
    kept = json.loads(line)
    assert "database refused it" in kept["error"]
    assert kept["exchange"]["usage"]["prompt_tokens"] == 10**23 and kept["exchange"]["stream"] is True
    health = await _health(proxy)
    assert health["status"] == "ok" and health["recorder"]["quarantined"] == 1
    async with aiohttp.ClientSession() as http, http.get(proxy.url + "/_proxy/metrics") as resp:
        assert "proxy_recorder_quarantined_total 1.0" in await resp.text()
    # And recording goes on.
    await client.models.list()
    assert len(await proxy.rows()) == 3
