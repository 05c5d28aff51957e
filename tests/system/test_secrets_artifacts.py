"""No key in any artifact the proxy writes: a real `proxy serve` (logs at DEBUG, access log on) gets every key in
every place a key can be sent, on the normal path, while its database is down (spool), from malformed upstream answers
and as malformed raw requests; then every artifact it wrote is searched for every key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from proxy.record.redact import fingerprint
from proxy.store import db
from proxy.store.tables import exchanges
from tests.support import BACKENDS, PG_URL
from tests.support.cli import free_port, proxy_cmd, run_cli, wait_port
from tests.support.http import raw_http, status_of

MESSAGES = [{"role": "user", "content": "one two three four five six"}]

KEYS = {
    "authorization": "sk-auth-0123456789abcdefghijklmnop",
    "api-key": "0123456789abcdef0123456789abcdef",  # Azure-style: not key-shaped, redacted by the header name
    "x-api-key": "sk-ant-api03-0123456789abcdefghijklmn",
    "query": "AIzaSyD-0123456789abcdefghijklmnopqrstu",  # Gemini-style
    "body": "sk-body-0123456789abcdefghijklmnop",
    "user": "sk-user-0123456789abcdefghijklmnop",
}
FP_SECRET = "fingerprint-secret-0123456789abcdef"  # configured: it may live in the config, never anywhere else
EVERY_PLACE = {"authorization", "api-key", "x-api-key", "query"}


def _placed(place: str, stream: bool) -> tuple[dict[str, str], str, dict[str, Any]]:
    """Headers, query and body of a chat request carrying the key of ``place`` (and only that credential)."""
    body: dict[str, Any] = {"model": "fake-model", "messages": MESSAGES, "stream": stream}
    headers, query = {"X-Proxy-Session": "leak"}, ""
    if place == "authorization":
        headers["Authorization"] = f"Bearer {KEYS[place]}"
    elif place in ("api-key", "x-api-key"):
        headers[place] = KEYS[place]
    elif place == "query":
        query = f"?alt=x&key={KEYS[place]}"
    elif place == "body":
        body["messages"] = [{"role": "user", "content": f"my key is {KEYS[place]}, remember it"}]
    elif place == "user":
        body["user"] = KEYS[place]
    return headers, query, body


def _raw_requests() -> list[bytes]:
    """Requests aiohttp's parser refuses, quoting their bytes in its default answer and ERROR log."""
    a, h, x, q, u = (KEYS[k].encode() for k in ("authorization", "api-key", "x-api-key", "query", "user"))
    return [
        b"POST /v1/chat/completions?key=" + q + b" HTTP/1.1\nHost: x\nAuthorization: Bearer " + a
        + b"\napi-key: " + h + b"\nx-api-key: " + x + b"\nContent-Length: 2\n\n{}",  # bare LF line ends
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + a + b"\x01\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\napi-key: " + h + b"\x7f\r\n\r\n",
        b"GET /v1/models?key=" + q + b"\x01 HTTP/1.1\r\nHost: x\r\nx-api-key: " + x + b"\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nx-api-key: " + x
        + b"\r\n\r\nzz\r\n{\"user\": \"" + u + b"\"}\r\n0\r\n\r\n",  # a bad chunk size
    ]


@dataclass
class Served:
    """A `proxy serve` subprocess and where it keeps things."""

    url: str
    proc: subprocess.Popen[bytes]
    db_url: str
    tmp: Path

    @property
    def spool(self) -> Path:
        return self.tmp / "spool"


async def _pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (a subprocess cannot be given a schema search path)."""
    from sqlalchemy.engine import make_url

    assert PG_URL
    name = f"secrets_{uuid.uuid4().hex[:10]}"
    admin = db.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.dispose()


@pytest.fixture(params=BACKENDS)
async def served(
    request: pytest.FixtureRequest, tmp_path: Path, fake_upstream_port: int, malformed_upstream: str
) -> AsyncIterator[Served]:
    databases = _pg_database() if request.param == "postgres" else None
    db_url = await anext(databases) if databases else f"sqlite+aiosqlite:///{tmp_path / 'proxy.db'}"
    port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\nlog_level = "DEBUG"\naccess_log = true\nfingerprint_secret = "{FP_SECRET}"\n'
        f'[upstream]\nurl = "http://127.0.0.1:{fake_upstream_port}/v1"\n'
        f'[upstreams.bad]\nurl = "{malformed_upstream}"\n[upstreams.dead]\nurl = "http://127.0.0.1:9/v1"\n'
        f'[database]\nurl = "{db_url}"\n[recorder]\nspool_dir = "{tmp_path / "spool"}"\nretry_interval = 0.2\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    log = (tmp_path / "proxy.log").open("wb")  # a file, not a pipe: a DEBUG log would fill a pipe and block
    proc = subprocess.Popen(proxy_cmd("serve", "--config", str(config)), cwd=tmp_path, env=env, stderr=log)
    try:
        wait_port(port, proc, timeout=60)
        yield Served(f"http://127.0.0.1:{port}", proc, db_url, tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        if databases:
            await anext(databases, None)


async def _send_every_key(http: aiohttp.ClientSession, served: Served) -> tuple[int, list[str]]:
    """Every key in every place, plain and streamed, and through upstreams that fail; (requests, error bodies)."""
    errors, sent = [], 0
    for place in KEYS:
        for stream in (False, True):
            headers, query, body = _placed(place, stream)
            async with http.post(f"{served.url}/v1/chat/completions{query}", json=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()
            sent += 1
        headers, query, body = _placed(place, False)
        for mount in ("bad", "dead"):
            url = f"{served.url}/{mount}/v1/chat/completions{query or '?key=' + KEYS['query']}"
            async with http.post(url, json=body, headers=headers) as resp:
                text = await resp.text()
                # aiohttp quotes the whole URL when an answer is malformed (not when it cannot connect).
                assert resp.status == 502 and (mount == "dead" or "key=[redacted]" in text), text
                errors.append(text)
            sent += 1
    return sent, errors


async def _rename_exchanges(db_url: str, old: str, new: str) -> None:
    engine = db.create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")
    finally:
        await engine.dispose()


async def _until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await check() if asyncio.iscoroutinefunction(check) else check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return found


async def _until_written_back(http: aiohttp.ClientSession, served: Served) -> int:
    """Requests sent until the spool is written back (the writer may only retry when traffic arrives)."""
    deadline, nudges = time.monotonic() + 20, 0
    while list(served.spool.glob("spool-*.msgpack")):
        assert time.monotonic() < deadline, "the spool was never written back"
        async with http.get(f"{served.url}/v1/models", headers={"X-Proxy-Session": "leak"}) as resp:
            assert resp.status == 200
        nudges += 1
        await asyncio.sleep(0.3)
    return nudges


async def _admin_texts(http: aiohttp.ClientSession, served: Served) -> list[str]:
    async with http.get(f"{served.url}/_proxy/exchanges?limit=500") as resp:
        listing = await resp.text()
        ids = [e["id"] for e in json.loads(listing)["data"]]
    texts = [listing]
    for path in [f"/_proxy/exchanges/{i}?raw=1" for i in ids] + ["/_proxy/sessions/leak", "/_proxy/health"]:
        async with http.get(served.url + path) as resp:
            texts.append(await resp.text())
    return texts


async def _fingerprints(db_url: str) -> set[str | None]:
    engine = db.create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(select(exchanges.c.key_fingerprint).distinct())).scalars())
    finally:
        await engine.dispose()


def _database_dump(served: Served) -> bytes:
    if served.db_url.startswith("sqlite"):
        return b"".join(p.read_bytes() for p in sorted(served.tmp.glob("proxy.db*")))
    from sqlalchemy.engine import make_url

    url = make_url(served.db_url)
    args = ["pg_dump", "--data-only", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    out = subprocess.run([*args, "-U", url.username or "postgres", url.database or ""], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_no_key_in_any_artifact_the_proxy_writes(served: Served) -> None:
    artifacts: dict[str, bytes] = {}
    async with aiohttp.ClientSession() as http:
        sent, errors = await _send_every_key(http, served)
        for i, raw in enumerate(_raw_requests()):
            response = await raw_http(int(served.url.rsplit(":", 1)[1]), raw)
            assert status_of(response) == 400, response
            artifacts[f"answer to malformed request {i}"] = response
        # The database goes away: every record of the second round goes to the spool first.
        await _rename_exchanges(served.db_url, "exchanges", "exchanges_away")
        more, more_errors = await _send_every_key(http, served)
        spooled = await _until(lambda: sorted(served.spool.glob("spool-*")), "a spool file")
        await asyncio.sleep(0.5)  # the rest of the round's batches
        artifacts |= {f"spool file {p.name}": p.read_bytes() for p in sorted(served.spool.glob("spool-*"))}
        async with http.get(f"{served.url}/_proxy/health") as resp:
            artifacts["health while the database is down"] = await resp.read()
        await _rename_exchanges(served.db_url, "exchanges_away", "exchanges")
        nudges = await _until_written_back(http, served)
        texts = await _admin_texts(http, served)
    assert spooled
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(60) == 0
    stderr = (served.tmp / "proxy.log").read_bytes()
    artifacts["log (DEBUG, access log on)"] = stderr
    artifacts |= {f"error body {i}": e.encode() for i, e in enumerate(errors + more_errors)}
    artifacts |= {f"admin API {i}": t.encode() for i, t in enumerate(texts)}
    for fmt in ("jsonl", "har"):
        out = run_cli("export", "--db", served.db_url, "--session", "leak", "--format", fmt, cwd=served.tmp)
        assert out.returncode == 0, out.stderr
        artifacts[f"proxy export --format {fmt}"] = out.stdout.encode()
    artifacts["database"] = _database_dump(served)
    leftovers = [p for p in served.spool.iterdir()] if served.spool.is_dir() else []
    artifacts |= {f"spool leftover {p.name}": p.read_bytes() for p in leftovers}

    # Nothing here passes by being empty: the records, the log lines and the redactions are all there.
    exported = artifacts["proxy export --format jsonl"].decode().splitlines()
    assert len(exported) == 1 + sent + more + nudges, "every request recorded once, spooled ones included"
    log_text = stderr.decode(errors="replace")
    assert "malformed request from" in log_text and "key=[redacted]" in log_text, log_text[-3000:]
    assert "GET /_proxy/health" in log_text, "the access log was on"
    fingerprints = {fingerprint(FP_SECRET.encode(), KEYS[place]) for place in EVERY_PLACE}
    assert await _fingerprints(served.db_url) == fingerprints | {None}, "each credential place is fingerprinted"
    leaks = [
        f"{place} key in {name}"
        for name, data in artifacts.items()
        for place, key in KEYS.items()
        if key.encode() in data or key[8:24].encode() in data
    ]
    leaks += [f"fingerprint secret in {name}" for name, data in artifacts.items() if FP_SECRET.encode() in data]
    assert not leaks, leaks
