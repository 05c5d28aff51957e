"""``proxy serve`` as a user runs it: real processes, real signals, several workers."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import openai
import pytest

from proxy.cli import build_parser
from proxy.commands import flags_tree
from proxy.config import ConfigError, load_settings
from tests.support import API_KEY, FaultReport
from tests.support.cli import ends_soon, run_cli, start_serve, stop_serve


async def _traffic_then_signal(port: int, proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0) as client:
        messages = [{"role": "user", "content": "count to three"}]
        for i in range(10):
            if i % 2:
                await client.chat.completions.create(model="fake-model", messages=messages)
            else:
                [
                    c
                    async for c in await client.chat.completions.create(
                        model="fake-model", messages=messages, stream=True
                    )
                ]
        slow = await client.chat.completions.create(
            model="fake-model",
            messages=messages,
            stream=True,
            extra_headers={"x-fake-delay-ms": "40", "x-fake-events": "20"},
        )
        iterator = slow.__aiter__()
        await iterator.__anext__()
        proc.send_signal(sig)
        rest = [c async for c in iterator]
        assert rest[-1].choices[0].finish_reason == "stop"


def _start_serve(tmp_path: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    return start_serve("--upstream", f"http://127.0.0.1:{upstream_port}/v1", cwd=tmp_path)


async def _concurrent_streams(port: int, n: int, on_started: Callable[[], None]) -> list[str]:
    async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0) as client:
        started = asyncio.Event()
        count = 0

        async def one() -> str:
            nonlocal count
            try:
                stream = await client.chat.completions.create(
                    model="fake-model",
                    messages=[{"role": "user", "content": "go"}],
                    stream=True,
                    extra_headers={"x-fake-delay-ms": "30", "x-fake-events": "30"},
                )
                chunks = []
                async for chunk in stream:
                    chunks.append(chunk)
                    if len(chunks) == 2:
                        count += 1
                        if count == n:
                            started.set()
                return chunks[-1].choices[0].finish_reason or "none"
            except openai.APIError as exc:
                return type(exc).__name__

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.wait_for(started.wait(), 20)
        on_started()
        return await asyncio.gather(*tasks)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_records_and_drains_on_signal(tmp_path: Path, fake_upstream_port: int, sig: signal.Signals) -> None:
    upstream = {"PROXY_UPSTREAM_URL": f"http://127.0.0.1:{fake_upstream_port}/v1"}  # env and flags mix
    proc, port = start_serve(cwd=tmp_path, env=upstream)
    try:
        asyncio.run(_traffic_then_signal(port, proc, sig))
        assert proc.wait(30) in (0, -sig)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read().decode() if proc.stderr else ""
    assert API_KEY not in log
    db = sqlite3.connect(tmp_path / "proxy.db")  # the default database, created by `serve`
    rows = db.execute("SELECT status, stream, outcome, total_tokens FROM exchanges ORDER BY started_at").fetchall()
    assert len(rows) == 11, log
    assert all(r[0] == 200 and r[2] == "complete" and r[3] for r in rows[:10])
    # The stream in flight when the signal came finished (graceful stop waits for it) and was recorded.
    assert rows[10][1] == 1 and rows[10][2] == "complete"
    assert not list((tmp_path / "proxy-spool").glob("*.msgpack"))


def test_sigterm_under_load_finishes_streams_and_loses_nothing(
    tmp_path: Path, fake_upstream_port: int, fault_report: FaultReport
) -> None:
    proc, port = _start_serve(tmp_path, fake_upstream_port)
    try:
        results = asyncio.run(_concurrent_streams(port, 40, lambda: proc.send_signal(signal.SIGTERM)))
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert results == ["stop"] * 40, "every in-flight stream finished"
    db = sqlite3.connect(tmp_path / "proxy.db")
    rows = db.execute("SELECT outcome, completion_tokens FROM exchanges").fetchall()
    fault_report.add("SIGTERM with 40 streams in flight", 40, 40 - len(rows), "every stream completes")
    assert len(rows) == 40 and all(r == ("complete", 30) for r in rows)


def test_kill_9_loses_at_most_the_last_writes_and_leaves_a_consistent_database(
    tmp_path: Path, fake_upstream_port: int, fault_report: FaultReport
) -> None:
    proc, port = _start_serve(tmp_path, fake_upstream_port)
    finished: list[float] = []  # when each response had fully arrived

    async def traffic() -> None:
        async with openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0) as client:
            for _ in range(60):
                await client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}])
                finished.append(time.monotonic())

    asyncio.run(traffic())
    proc.kill()  # SIGKILL: no drain, no cleanup
    killed = time.monotonic()
    sent = len(finished)
    proc.wait(10)
    db = sqlite3.connect(tmp_path / "proxy.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = db.execute("SELECT count(*) FROM exchanges").fetchone()[0]
    orphans = db.execute(
        "SELECT count(*) FROM exchanges e LEFT JOIN exchange_bodies b ON b.exchange_id = e.id "
        "WHERE b.exchange_id IS NULL"
    ).fetchone()[0]
    assert orphans == 0, "a record and its body are written in one transaction"
    # The README's bound: only exchanges that finished within the last flush interval (recorder.batch_delay,
    # 50 ms) plus the time one batch takes to write; 0.5 s is that with room for a busy machine.
    window = sum(t > killed - 0.5 for t in finished)
    fault_report.add(
        "kill -9 right after the last response",
        sent,
        sent - rows,
        "- (bound: exchanges finished in the last flush interval)",
    )
    assert sent - window <= rows <= sent, f"{sent - rows} of {sent} lost; {window} finished in the last 0.5 s"


def _listeners(port: int) -> int:
    """Listening TCP sockets on ``port`` (one per worker when SO_REUSEPORT is in effect)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


def _wait_listeners(port: int, n: int) -> bool:
    """Whether ``n`` sockets listen on ``port`` within 10 s (a second worker binds shortly after the first)."""
    for _ in range(200):
        if _listeners(port) == n:
            return True
        time.sleep(0.05)
    return _listeners(port) == n


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
    proc, port = start_serve("--upstream", f"http://127.0.0.1:{fake_upstream_port}/v1", "--workers", "2", cwd=tmp_path)
    try:
        assert _wait_listeners(port, 2)
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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_is_one_line_before_any_listening_line(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli(
            "serve", "--demo", "--workers", workers, "--listen", f"127.0.0.1:{port}", cwd=tmp_path
        )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == [f"proxy serve: error: listen: cannot listen on 127.0.0.1:{port}: already in use "
                     "(another proxy or program serves it)"], out.stderr  # fmt: skip
    assert not (tmp_path / "proxy.db").exists()


def test_a_second_proxy_on_the_same_port_is_refused_and_the_first_keeps_it(
    tmp_path: Path, fake_upstream_port: int
) -> None:
    upstream = f"http://127.0.0.1:{fake_upstream_port}/v1"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, port = start_serve("--upstream", upstream, "--workers", "2", cwd=tmp_path / "a")
    try:
        _wait_listeners(port, 2)
        second = run_cli(
            "serve", "--upstream", upstream, "--workers", "2", "--listen", f"127.0.0.1:{port}", cwd=tmp_path / "b"
        )  # fmt: skip
        assert second.returncode == 2 and "already in use" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert asyncio.run(_requests(port, 10)) == [200] * 10
    finally:
        code, log = stop_serve(first)
    assert code == 0, log
    assert sqlite3.connect(tmp_path / "a" / "proxy.db").execute("SELECT count(*) FROM exchanges").fetchone() == (10,)
    assert not (tmp_path / "b" / "proxy.db").exists()


def test_workers_exit_when_their_supervisor_is_killed(tmp_path: Path, fake_upstream_port: int) -> None:
    proc, port = start_serve("--upstream", f"http://127.0.0.1:{fake_upstream_port}/v1", "--workers", "2", cwd=tmp_path)
    _wait_listeners(port, 2)
    workers = _workers(proc.pid)
    assert len(workers) == 2
    assert asyncio.run(_requests(port, 6)) == [200] * 6
    stop_serve(proc, signal.SIGKILL)
    assert all(ends_soon(pid, 30) for pid in workers), "no orphan keeps the port"
    assert _listeners(port) == 0
    # Each drained its recorder on the way out, as on SIGTERM.
    assert sqlite3.connect(tmp_path / "proxy.db").execute("SELECT count(*) FROM exchanges").fetchone() == (6,)


@pytest.mark.parametrize(("argv", "relay"), [([], False), (["--relay"], True), (["--no-relay"], False)])
def test_relay_flag_sets_server_relay(argv: list[str], relay: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_SERVER_RELAY", "false" if relay else "true")  # the flag wins over the environment
    args = build_parser().parse_args(["serve", "--demo", *argv])
    settings = load_settings(None, flags_tree(args))
    assert settings.server.relay is (relay if argv else True)
