"""The ``proxy`` command as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import API_KEY, FaultReport

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never opened")


def proxy_cmd(*args: str) -> list[str]:
    return [PY, "-m", "proxy", *args]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    return subprocess.run(
        proxy_cmd(*args), cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def fake_upstream_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "proxy.testing.fake_upstream", "--port", str(port)], stderr=subprocess.PIPE)
    wait_port(port, proc)
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve"], {}, "upstream.url: an upstream URL is required"),
        (["serve", "--upstream", "ftp://nope"], {}, "upstream.url: not an http(s) URL"),
        (["serve", "--upstream", "http://x/v1", "--listen", "oops"], {}, "listen: expected HOST:PORT"),
        (["serve", "--upstream", "http://x/v1"], {"PROXY_RECORDER_BATCH_SIZE": "many"}, "recorder.batch_size"),
        (
            ["serve", "--upstream", "http://x/v1", "--db", "postgresql+asyncpg://u@127.0.0.1:1/x"],
            {},
            "database.url: cannot connect to postgresql+asyncpg://u@127.0.0.1:1/x",
        ),
        (["db", "current", "--db", "sqlite+aiosqlite:////nonexistent-dir/x.db"], {}, "database.url: cannot connect"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, args: list[str], env: dict[str, str], message: str) -> None:
    result = run_cli(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert "(empty)" in run_cli("db", "current", "--db", url, cwd=tmp_path).stdout
    upgraded = run_cli("db", "upgrade", "--db", url, cwd=tmp_path)
    assert upgraded.returncode == 0 and "up to date" in upgraded.stdout
    assert "up to date" in run_cli("db", "current", "--db", url, cwd=tmp_path).stdout


def test_python_dash_m_and_console_script_agree(tmp_path: Path) -> None:
    script = Path(PY).with_name("proxy")
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    for cmd in ([PY, "-m", "proxy", "--help"], [str(script), "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "serve" in out.stdout and "db" in out.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_records_and_drains_on_signal(tmp_path: Path, fake_upstream_port: int, sig: signal.Signals) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    env["PROXY_UPSTREAM_URL"] = f"http://127.0.0.1:{fake_upstream_port}/v1"  # env and flags mix
    proc = subprocess.Popen(
        proxy_cmd("serve", "--listen", f"127.0.0.1:{port}"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port, proc)
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
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXY_")}
    proc = subprocess.Popen(
        proxy_cmd("serve", "--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{upstream_port}/v1"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_port(port, proc)
    return proc, port


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
