"""Export, import, replay: a recording leaves the database as a readable file and comes back byte for byte."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.forward.app import create_app
from proxy.forward.state import STATE
from proxy.replay.export import ExportError, import_records, jsonl, read_records, session_records
from proxy.replay.har import to_har
from proxy.replay.matchkey import DEFAULT_RULES
from tests.conftest import API_KEY, Database, Proxy, ProxyFactory, make_settings, upstream_requests
from tests.test_cli import free_port, proxy_cmd, run_cli, wait_port

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
REQUESTS: list[dict[str, Any]] = [
    {"model": "fake-openrouter", "messages": [{"role": "user", "content": "crlf and comments"}], "stream": True},
    {"model": "fake-model", "messages": [{"role": "user", "content": "héllo wörld ✓"}], "stream": True},
    {"model": "fake-tools", "messages": [{"role": "user", "content": "weather"}], "tools": TOOLS, "stream": True},
    {"model": "fake-model", "messages": [{"role": "user", "content": "plain"}], "temperature": 1.0},
    {"model": "fake-error-500", "messages": [{"role": "user", "content": "boom"}]},
]


async def send_all(base: str) -> list[bytes]:
    """Each request's response bytes exactly as the client received them."""
    out = []
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for body in REQUESTS:
            async with http.post(f"{base}/chat/completions", json=body, headers=AUTH) as resp:
                out.append(await resp.read())
    return out


async def recorded(proxy: Proxy, session: str = "exp") -> list[bytes]:
    received = await send_all(f"{proxy.url}/s/{session}/v1")
    await proxy.recorder.flush()
    return received


async def test_export_import_replay_is_byte_identical(start_proxy: ProxyFactory, database: Database) -> None:
    received = await recorded(await start_proxy())
    records = await session_records(database.engine, "exp")
    text = jsonl("exp", records)
    fingerprint = (await database.rows())[0]["key_fingerprint"]
    assert fingerprint and fingerprint.encode() not in text
    assert API_KEY.encode() not in text and b"authorization" not in text.lower()

    lines = text.splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "llm-recording-proxy/exchanges" and header["version"] == 1
    assert header["exchanges"] == len(REQUESTS) == len(lines) - 1
    first = json.loads(lines[1])
    assert list(first)[:4] == ["id", "session_id", "started_at", "finished_at"], "fixed field order"
    assert first["response"]["body"]["reads"][0][1] == ": OPENROUTER PROCESSING\r\n\r\n", "readable reads"
    plain = json.loads(lines[4])
    assert plain["request"]["body"]["json"]["temperature"] == 1, "requests are canonical"
    assert list(plain["request"]["body"]["json"]) == sorted(plain["request"]["body"]["json"])
    assert plain["response"]["body"]["json"]["choices"][0]["message"]["content"] == "Echo: plain "

    imported = list(read_records(text.splitlines(keepends=True)))
    assert await import_records(database.engine, imported, DEFAULT_RULES) == (0, len(REQUESTS)), "idempotent"
    assert await import_records(database.engine, imported, DEFAULT_RULES, session="copy") == (len(REQUESTS), 0)
    again = await session_records(database.engine, "copy")
    strip = ("id", "session_id")
    assert [
        {k: v for k, v in json.loads(jsonl("x", [r]).splitlines()[1]).items() if k not in strip} for r in again
    ] == [{k: v for k, v in json.loads(line).items() if k not in strip} for line in lines[1:]], (
        "re-exporting the import gives the same records"
    )

    replayer = await start_proxy(upstream_url="", mode="replay", replay={"timing": "instant"})
    assert await send_all(f"{replayer.url}/s/copy/v1") == received


def test_export_is_stable_and_versioned(tmp_path: Path) -> None:
    header = {"format": "llm-recording-proxy/exchanges", "version": 2}
    with pytest.raises(ExportError, match="version 2 was written by a newer proxy"):
        list(read_records([json.dumps(header).encode()]))
    with pytest.raises(ExportError, match="line 1: format 'x'"):
        list(read_records([b'{"format": "x"}']))
    with pytest.raises(ExportError, match="line 2"):
        list(read_records([json.dumps({**header, "version": 1}).encode(), b'{"id": 1}']))


async def test_har_export(start_proxy: ProxyFactory, database: Database) -> None:
    received = await recorded(await start_proxy())
    records = await session_records(database.engine, "exp")
    har = to_har(records, {"default": "https://user:pw@api.example.com/v1"}, "1.0")
    log = har["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "llm-recording-proxy"
    entries = log["entries"]
    assert len(entries) == len(REQUESTS)
    first = entries[0]
    assert first["request"]["url"] == "https://api.example.com/v1/chat/completions"
    assert json.loads(first["request"]["postData"]["text"])["model"] == "fake-openrouter"
    assert first["response"]["content"]["text"].encode() == received[0]
    assert first["response"]["content"]["mimeType"].startswith("text/event-stream")
    assert first["timings"]["wait"] + first["timings"]["receive"] == pytest.approx(first["time"])
    assert entries[4]["response"]["status"] == 500 and entries[4]["response"]["statusText"] == "Internal Server Error"
    assert "pw@" not in json.dumps(har) and API_KEY not in json.dumps(har)


async def test_cli_export_replay_import_then_serve_replay_with_no_upstream(
    tmp_path: Path, sqlite_db: Database, upstream: TestServer, aiohttp_server: Callable[..., Any]
) -> None:
    """As a user does it: export to a file, re-send, import into a fresh database, serve it in replay mode."""
    settings = make_settings(str(upstream.make_url("/v1")), sqlite_db, tmp_path)
    app = create_app(settings, sqlite_db.engine)
    server = await aiohttp_server(app)
    received = await send_all(str(server.make_url("/s/cli/v1")))
    await app[STATE].recorder.flush()
    src, dst = sqlite_db.url, f"sqlite+aiosqlite:///{tmp_path / 'dst.db'}"
    target = str(upstream.make_url("/v1"))

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, env=env)

    out = tmp_path / "cli.jsonl"
    result = await asyncio.to_thread(cli, "export", "--db", src, "--session", "cli", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"exported {len(REQUESTS)} exchanges of session 'cli'" in result.stderr
    resent = await asyncio.to_thread(
        cli, "replay", "cli", "--to", target, "--db", src, "--api-key-env", "MY_KEY", "--report", "r.md",
        "--new-session", "again", MY_KEY="sk-from-env-0123456789",
    )  # fmt: skip
    assert resent.returncode == 0, resent.stderr
    assert resent.stdout.startswith(f"re-sent {len(REQUESTS)} requests of session 'cli' to {target}")
    assert "as session 'again': 0 changed" in resent.stdout and "0 failed" in resent.stdout
    assert upstream_requests(upstream)[-1]["headers"]["Authorization"] == "Bearer sk-from-env-0123456789"
    assert "# Re-send of session `cli` as `again`" in (tmp_path / "r.md").read_text()
    assert "sk-from-env" not in (tmp_path / "r.md").read_text()
    result = await asyncio.to_thread(cli, "import", "--db", dst, str(out))
    assert result.returncode == 0 and f"imported {len(REQUESTS)} exchanges" in result.stdout, result.stderr

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    proc = subprocess.Popen(
        proxy_cmd("serve", "--db", dst, "--mode", "replay", "--listen", f"127.0.0.1:{port}", "--replay-timing",
                  "instant"),
        cwd=tmp_path, env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_port, port, proc)
        assert await send_all(f"http://127.0.0.1:{port}/s/cli/v1") == received
    finally:
        proc.terminate()
        proc.wait(30)
