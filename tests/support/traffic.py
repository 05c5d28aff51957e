"""Traffic the tests share: a small mixed set of calls, a session of requests whose bytes are compared
after a round trip, one raw POST read to its end, records of known ages, finished exchanges to hand a
recorder, and reading the admin API and the CLI's output."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from proxy.record.exchange import Exchange
from proxy.store import recordings
from proxy.store.writes import insert_exchanges
from tests.support import API_KEY, Database, Proxy


async def mixed_traffic(proxy: Proxy) -> None:
    client = proxy.client("/s/suite-1/v1")
    messages = [{"role": "user", "content": "count to three please"}]
    await client.chat.completions.create(model="fake-model", messages=messages)
    chunks = await client.chat.completions.create(model="fake-openrouter", messages=messages, stream=True)
    [c async for c in chunks]
    chunks = await client.chat.completions.create(model="fake-reasoning", messages=messages, stream=True)
    [c async for c in chunks]
    with pytest.raises(Exception):  # noqa: B017 - any SDK error type
        await client.chat.completions.create(model="fake-error-429", messages=messages)
    await proxy.recorder.flush()


async def admin_get(proxy: Proxy, path: str, token: str | None = None) -> tuple[int, Any, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(proxy.url + path, headers=headers) as r:
        text = await r.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        return r.status, body, text


def cli_stdout(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


AUTH = {"Authorization": f"Bearer {API_KEY}"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
MIXED_REQUESTS: list[dict[str, Any]] = [
    {"model": "fake-openrouter", "messages": [{"role": "user", "content": "crlf and comments"}], "stream": True},
    {"model": "fake-model", "messages": [{"role": "user", "content": "héllo wörld ✓"}], "stream": True},
    {"model": "fake-tools", "messages": [{"role": "user", "content": "weather"}], "tools": TOOLS, "stream": True},
    {"model": "fake-model", "messages": [{"role": "user", "content": "plain"}], "temperature": 1.0},
    {"model": "fake-error-500", "messages": [{"role": "user", "content": "boom"}]},
]


def msgs(text: str) -> list[dict[str, str]]:
    """A short chat whose last user message is ``text``."""
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


class Answer(NamedTuple):
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def post_json(url: str, body: dict[str, Any], headers: dict[str, str] = AUTH) -> Answer:
    """One POST of ``body`` with the test key, read to its end: what a client got, byte for byte."""
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


async def send_all(base: str) -> list[bytes]:
    """Each request's response bytes exactly as the client received them."""
    out = []
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for body in MIXED_REQUESTS:
            async with http.post(f"{base}/chat/completions", json=body, headers=AUTH) as resp:
                out.append(await resp.read())
    return out


async def recorded(proxy: Proxy, session: str = "exp") -> list[bytes]:
    received = await send_all(f"{proxy.url}/s/{session}/v1")
    await proxy.recorder.flush()
    return received


AGES_DAYS = [0, 1, 5, 12, 25, 40, 40, 90]


async def seed_aged(database: Database) -> list[Exchange]:
    now = datetime.now(UTC)
    batch = []
    for days in AGES_DAYS:
        ex = Exchange(method="POST", path="/v1/chat/completions", status=200, started_at=now - timedelta(days=days))
        ex.request_body = b'{"model":"m"}'
        ex.finish()
        batch.append(ex)
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, batch)
    return batch


async def link_resend(
    database: Database, session: str, source: str, pairs: list[tuple[str, str]], summary: dict[str, Any]
) -> None:
    """Mark ``session`` as a re-send of ``source`` (as ``proxy replay`` does), with (new, original) id pairs."""
    await recordings.save_links(
        database.engine,
        session_id=session,
        source_session_id=source,
        created_at=datetime.now(UTC),
        target="http://127.0.0.1:9/v1",
        model=None,
        summary=summary,
        pairs=pairs,
    )


def finished_exchange(session_id: str, request_body: bytes = b"") -> Exchange:
    """A complete non-streamed chat exchange with usage 1 + 2, as the handler submits it to the recorder."""
    ex = Exchange(method="POST", path="/v1/chat/completions", session_id=session_id, status=200)
    ex.request_body = request_body
    ex.response_headers = {"content-type": "application/json"}
    ex.response_body = b'{"usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}'
    ex.finish()
    return ex
