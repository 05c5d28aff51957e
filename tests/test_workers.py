"""``proxy serve --workers N``: N processes accept on one port (SO_REUSEPORT) and share the database."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from proxy.config import ConfigError, load_settings
from tests import test_cli
from tests.conftest import API_KEY
from tests.test_cli import free_port, proxy_cmd, wait_port

fake_upstream_port = test_cli.fake_upstream_port  # the fixture, shared with the CLI tests


def _listeners(port: int) -> int:
    """Listening TCP sockets on ``port`` (one per worker when SO_REUSEPORT is in effect)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


async def _requests(port: int, n: int) -> list[int]:
    # A new connection per request, so the kernel spreads them over the workers.
    connector = aiohttp.TCPConnector(force_close=True)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "one two three"}]}
    async with aiohttp.ClientSession(connector=connector) as s:

        async def one(i: int) -> int:
            payload = {**body, "stream": i % 2 == 0}
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=payload, headers=headers) as r:
                await r.read()
                return r.status

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_two_workers_share_port_and_database(tmp_path: Path, fake_upstream_port: int) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    proc = subprocess.Popen(
        proxy_cmd(
            "serve",
            "--upstream",
            f"http://127.0.0.1:{fake_upstream_port}/v1",
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port, proc)
        for _ in range(200):  # the second worker binds shortly after the first
            if _listeners(port) == 2:
                break
            time.sleep(0.05)
        assert _listeners(port) == 2
        workers = _workers(proc.pid)
        assert len(workers) == 2
        statuses = asyncio.run(_requests(port, 40))
        assert statuses == [200] * 40
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read().decode() if proc.stderr else ""
    assert "2 workers" in log and API_KEY not in log
    db = sqlite3.connect(tmp_path / "proxy.db")
    rows = db.execute("SELECT count(*), count(DISTINCT key_fingerprint), sum(total_tokens IS NULL) FROM exchanges")
    # Every exchange recorded once, and both workers fingerprint the key with the one shared secret.
    assert rows.fetchone() == (40, 1, 0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [({"workers": 0}, "workers: must be >= 1"), ({"workers": 2, "listen": "127.0.0.1:0"}, "need a fixed port")],
)
def test_bad_worker_settings(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, flags, env={})
