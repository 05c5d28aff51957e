"""Property-based fuzzing: random and mutated requests and SSE streams through a running proxy.

The proxy and the fake upstream run on their own event loop in a thread, so hypothesis can drive plain
blocking HTTP requests at them. Properties: the proxy never answers 500 from its own code, never stops
serving, and records every request exactly once (each request carries a unique session id).
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import socket
import sqlite3
import threading
import urllib.parse
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.forward.app import create_app
from proxy.forward.state import STATE
from proxy.store import db, migrate
from proxy.testing import fake_upstream
from tests.support import FaultReport

T = TypeVar("T")
FUZZ_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Stack:
    """Fake upstream + proxy on a private loop in a background thread."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.db_path = tmp / "fuzz.db"
        self.spool = tmp / "spool"
        self.runners: list[web.AppRunner] = []
        self.counter = itertools.count()
        self.sent: list[str] = []
        self.log: dict[str, tuple[str, str, int]] = {}

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _serve(self, app: web.Application) -> int:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        return runner.addresses[0][1]

    async def start(self) -> None:
        from proxy.config import Settings

        url = f"sqlite+aiosqlite:///{self.db_path}"
        engine = db.create_engine(url)
        await db.enable_wal(engine)
        await migrate.upgrade(engine)
        await engine.dispose()
        self.upstream_port = await self._serve(fake_upstream.create_app())
        settings_ = msgspec.convert(
            {
                "upstream": {"url": f"http://127.0.0.1:{self.upstream_port}/v1"},
                "database": {"url": url},
                "recorder": {"spool_dir": str(self.spool)},
                "max_body_bytes": 64 * 1024,
            },
            Settings,
        )
        self.app = create_app(settings_)
        self.port = await self._serve(self.app)

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
        session = f"fz-{next(self.counter)}"
        path = path.replace("{S}", session)  # a /s/{session}/ prefix names the same session as the header
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
            for name, value in {**headers, "X-Proxy-Session": session}.items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            self.sent.append(session)
            self.log[session] = (method, path, resp.status)
            return resp.status, data
        finally:
            conn.close()

    def raw(self, request: bytes) -> bytes:
        """Bytes on a socket, for what http.client would refuse to send; the answer's first bytes."""
        data = b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            try:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionError:  # the parser answered 400 and closed before it read everything
                pass
        return data

    def flush(self) -> None:
        self.call(self.app[STATE].recorder.flush())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("fuzz"))
    s.call(s.start())
    yield s
    s.call(s.stop())
    s.loop.call_soon_threadsafe(s.loop.stop)
    s.thread.join(10)


def assert_not_own_500(status: int, body: bytes) -> None:
    assert status != 500 or b"fake upstream error" in body, body[:300]


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
PATH = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~/%?=&:@!$'()*+,;", max_size=60)
VALID_CHAT = json.dumps(
    {"model": "fake-model", "messages": [{"role": "user", "content": "hi there"}], "stream": True}
).encode()


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@FUZZ_SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
    prefix=st.sampled_from(["/v1/", "/s/{S}/v1/", "/nope/v1/", "/v1/chat/"]),
    path=PATH,
    headers=st.dictionaries(TOKEN.map(lambda t: "X-" + t), HEADER_VALUE, max_size=5),
    content_type=st.sampled_from(["application/json", "text/plain", "application/octet-stream", ""]),
    body=st.one_of(st.none(), st.binary(max_size=300), mutated(VALID_CHAT), st.just(VALID_CHAT)),
)
def test_random_requests(
    stack: Stack, method: str, prefix: str, path: str, headers: dict[str, str], content_type: str, body: bytes | None
) -> None:
    if content_type:
        headers = {**headers, "Content-Type": content_type}
    status, data = stack.request(method, prefix + path.lstrip("/"), headers, body)
    assert_not_own_500(status, data)


SSE_PIECES = st.sampled_from(
    [
        'data: {"id":"a","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
        'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}\n\n',
        'data: {"id":"a","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n',
        'data: {"choices":null,"usage":null}\n\n',
        'data: {"error":{"message":"boom"}}\n\n',
        ": OPENROUTER PROCESSING\r\n\r\n",
        "data: [DONE]\n\n",
        "event: x\r\ndata: line1\rdata: line2\r\r",
        "data: {not json\n\n",
        "data: \xff\xfe\n\n",
        "\n\n\n",
        "data:",
        "id: 7\n",
        "retry: 10\n",
    ]
)


@FUZZ_SETTINGS
@given(
    pieces=st.lists(
        st.one_of(SSE_PIECES, st.text(max_size=30).map(lambda t: t.encode("utf-8").decode("latin-1"))), max_size=25
    ),
    split=st.integers(1, 64),
    asked_usage=st.booleans(),
)
def test_random_sse_streams(stack: Stack, pieces: list[str], split: int, asked_usage: bool) -> None:
    raw = "".join(pieces)
    request: dict[str, Any] = {
        "model": "fake-raw",
        "stream": True,
        "raw_sse": raw,
        "split": split,
        "messages": [{"role": "user", "content": "x"}],
    }
    if asked_usage:
        request["stream_options"] = {"include_usage": True}
    status, data = stack.request(
        "POST", "/v1/chat/completions", {"Content-Type": "application/json"}, json.dumps(request).encode()
    )
    assert status == 200
    if asked_usage:
        assert data == raw.encode("latin-1"), "a client that asked for usage gets the stream byte for byte"
    else:
        assert len(data) <= len(raw.encode("latin-1"))


# Headers a client sends, and headers the proxy reads itself (the session id above all).
HEADER_NAMES = st.sampled_from(
    ["User-Agent", "X-Proxy-Session", "X-Proxy-No-Store", "Content-Type", "Accept", "OpenAI-Organization",
     "Authorization", "X-Request-Id", "Accept-Encoding", "Idempotency-Key"]
) | TOKEN.map(lambda t: "X-" + t)  # fmt: skip


@FUZZ_SETTINGS
@given(
    headers=st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=40)), max_size=6),
    query=st.binary(max_size=40),
    session=st.binary(min_size=1, max_size=40),
    raw_target=st.booleans(),
    body=st.one_of(st.just(VALID_CHAT), st.binary(max_size=100)),
)
def test_arbitrary_bytes_in_headers_query_and_session_id(
    stack: Stack, headers: list[tuple[str, bytes]], query: bytes, session: bytes, raw_target: bool, body: bytes
) -> None:
    # Raw bytes in the request target are the parser's to refuse; %-escaped, any byte reaches the handler.
    quote = (lambda b: b) if raw_target else (lambda b: urllib.parse.quote_from_bytes(b, safe="").encode())
    target = b"/s/" + quote(session) + b"/v1/chat/completions?" + quote(query)
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: x", b"X-Proxy-Session: " + session]
    lines += [name.encode() + b": " + value for name, value in headers]
    lines += [f"Content-Length: {len(body)}".encode(), b"Connection: close"]
    answer = stack.raw(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    if answer:  # (none when the parser refused it and reset the connection before we read)
        assert answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 400 ")), answer[:100]  # (1.0: the parser's own 400)
        assert_not_own_500(int(answer.split(b" ", 2)[1]), answer)
    # A well-formed request right after it is still answered and (checked below) recorded exactly once.
    status, _ = stack.request("POST", "/v1/chat/completions", {"Content-Type": "application/json"}, VALID_CHAT)
    assert status == 200


def test_every_fuzzed_request_was_recorded_exactly_once(stack: Stack, fault_report: FaultReport) -> None:
    # Runs after the two property tests above (pytest keeps file order).
    assert len(stack.sent) >= 300
    stack.flush()
    conn = sqlite3.connect(stack.db_path)
    counts = dict(conn.execute("SELECT session_id, count(*) FROM exchanges GROUP BY session_id").fetchall())
    missing = {stack.log[s] for s in stack.sent if counts.get(s) != 1}
    fault_report.add(
        "random and mutated requests and SSE streams (hypothesis)",
        len(stack.sent),
        len(missing),
        "no 500 from the proxy, no crash",
    )
    assert not missing
    stats = stack.app[STATE].recorder.stats
    assert stats.dropped == 0 and stats.writer_restarts == 0 and stats.quarantined == 0, stats
    status, data = stack.request("GET", "/_proxy/health", {}, None)
    assert status == 200, "still serving"
    assert json.loads(data)["status"] == "ok"
