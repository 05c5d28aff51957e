"""Faults while traffic flows: the database goes away or hangs, clients read slowly, connections idle.

PostgreSQL outages are made real with a TCP relay between the proxy and the server: closing it cuts
every connection (as a restart or network failure would), black-holing it makes the database hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.forward.app import create_app
from proxy.forward.state import STATE
from proxy.store import db
from proxy.testing import fake_upstream
from tests.support import API_KEY, PG_MISSING, PG_URL, Database, FaultReport, make_database, make_settings

MESSAGES = [{"role": "user", "content": "are you there"}]


class Relay:
    """A TCP relay to PostgreSQL that a test can cut, black-hole and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                while self.blackhole:
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@pytest.fixture
async def pg_behind_relay(
    aiohttp_server: Callable[..., Any], upstream: TestServer, tmp_path: Path
) -> AsyncIterator[tuple[Any, Relay, Database]]:
    if not PG_URL:
        pytest.skip(PG_MISSING)
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    relay = Relay(url.port or 5432)
    await relay.start()
    async for database in make_database("postgres", tmp_path):
        # The proxy reaches the same schema through the relay; the test checks rows directly.
        relayed_url = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        engine = db.create_engine(relayed_url, connect_timeout=1, command_timeout=2, connect_args=database.connect_args)
        settings = make_settings(str(upstream.make_url("/v1")), database, tmp_path)
        server = await aiohttp_server(create_app(settings, engine))
        yield server, relay, database
        await engine.dispose()


async def _traffic(client: openai.AsyncOpenAI, rounds: int) -> float:
    """Half plain, half streamed requests; returns the slowest request's seconds."""
    slowest = 0.0
    for i in range(rounds):
        started = time.perf_counter()
        if i % 2:
            await client.chat.completions.create(model="fake-model", messages=MESSAGES)
        else:
            [c async for c in await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)]
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


async def _health(server: TestServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/_proxy/health")) as resp:
        return await resp.json()


async def test_postgres_cut_and_hung_mid_run_loses_nothing(
    pg_behind_relay: tuple[Any, Relay, Database], caplog: pytest.LogCaptureFixture, fault_report: FaultReport
) -> None:
    server, relay, database = pg_behind_relay
    recorder = server.app[STATE].recorder
    caplog.set_level(logging.WARNING, logger="proxy.record.recorder")
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key=API_KEY, max_retries=0) as client:
        await _traffic(client, 4)
        await recorder.flush()
        assert len(await database.rows()) == 4

        await relay.stop()  # every database connection dies, new ones are refused
        cut = await _traffic(client, 10)
        await recorder.flush()
        assert not recorder.stats.database_ok and recorder.stats.spooled == 10
        assert (await _health(server))["status"] == "degraded"

        await relay.start()
        relay.blackhole = True  # connections open, but the database never answers
        hung = await _traffic(client, 10)
        assert cut < 1.0 and hung < 1.0, "clients never wait for the database"
        await asyncio.sleep(2.5)  # the writer's probe times out against the hung database
        relay.blackhole = False

        await asyncio.sleep(0.3)
        await _traffic(client, 2)
        for _ in range(100):
            await recorder.flush()
            if recorder.stats.database_ok and not recorder.spool_files():
                break
            await asyncio.sleep(0.1)
    rows = await database.rows()
    lost = 26 - len({r["id"] for r in rows})
    fault_report.add("postgres: every connection cut mid-run (relay closed)", 10, lost, "normal answers")
    fault_report.add("postgres: database hangs mid-run (relay black-holed)", 10, lost, "normal answers")
    assert len(rows) == 4 + 10 + 10 + 2 == len({r["id"] for r in rows}), "no record lost or doubled"
    assert recorder.stats.dropped == 0
    assert len(await database.bodies()) == len(rows)
    outage_logs = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(outage_logs) == 1, "the outage is logged once, not per request"
    assert (await _health(server))["status"] == "ok"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # a property of the tee, not of storage
async def test_slow_client_applies_backpressure_to_the_upstream(
    start_proxy: Callable[..., Any], upstream: TestServer, fault_report: FaultReport
) -> None:
    proxy = await start_proxy()
    control = upstream.app[fake_upstream.CONTROL]
    body = {"model": "fake-firehose", "messages": MESSAGES, "stream": True, "events": 200_000}
    async with aiohttp.ClientSession(read_bufsize=2**16) as http:
        resp = await http.post(
            f"{proxy.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        await resp.content.readexactly(1000)
        # Socket buffers fill first (slowly on a busy machine); then the upstream must stop for good.
        stalled_at = -1
        for _ in range(50):
            before = control.bytes_sent
            await asyncio.sleep(0.3)
            if control.bytes_sent == before:
                stalled_at = before
                break
        await asyncio.sleep(0.5)
        assert stalled_at == control.bytes_sent, "the upstream kept sending while the client read nothing"
        assert stalled_at < control.stream_bytes / 2
        received = 1000 + len(await resp.read())
        resp.close()
    assert received == control.stream_bytes
    [row] = await proxy.rows()
    assert row["outcome"] == "complete"
    fault_report.add(
        f"client reads nothing for 1 s of a {control.stream_bytes >> 20} MiB stream",
        1,
        0,
        f"all bytes; upstream paused at {stalled_at >> 20} MiB (backpressure)",
    )


async def test_idle_and_half_open_connections_stay_cheap(proxy: Any, fault_report: FaultReport) -> None:
    def rss_kib() -> int:
        with open(f"/proc/{os.getpid()}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    before = rss_kib()
    conns = []
    for i in range(1500):
        _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.server.port)
        if i % 2:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")  # half a request
        conns.append(writer)
    await asyncio.sleep(0.5)
    models = await proxy.client().models.list()  # still serving
    grown_mib = (rss_kib() - before) / 1024
    for writer in conns:
        writer.transport.abort()
    assert models.data
    fault_report.add(
        "1500 idle or half-open client connections",
        1500,
        0,
        f"other clients served; +{grown_mib:.0f} MiB RSS (client and proxy sides)",
    )
    # Both ends of every connection live in this test process; still far from exhausting memory.
    assert grown_mib < 150, f"{grown_mib:.0f} MiB for 1500 idle connections"
