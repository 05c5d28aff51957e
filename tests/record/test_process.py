"""The writer process: records stored from a child of their own, counted back, its death and the
serving process's kill -9 survived."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sqlite3
import time
from pathlib import Path

import openai
import pytest

import proxy.record.process as process_module
import proxy.record.recorder as recorder_module
from proxy.config import WriterMode
from proxy.record.exchange import Exchange
from proxy.record.recorder import Recorder
from proxy.record.tap import BodyTap
from tests.support import Database, Proxy, ProxyFactory
from tests.support.cli import ends_soon, start_serve, stop_serve, writer_of
from tests.support.traffic import finished_exchange

MESSAGES = [{"role": "user", "content": "hello there"}]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_records_are_stored_by_the_writer_process_and_counted_back(start_proxy: ProxyFactory) -> None:
    proxy: Proxy = await start_proxy(recorder={"writer": "process"})
    recorder = proxy.recorder
    assert recorder.mode is WriterMode.PROCESS and recorder.process is not None
    pid = recorder.process.pid
    assert pid is not None and pid != os.getpid() and _alive(pid)
    seen: list[Exchange] = []
    real_hook = recorder.on_written

    def hook(batch: list[Exchange]) -> None:
        seen.extend(batch)
        if real_hook is not None:
            real_hook(batch)

    recorder.on_written = hook
    client = proxy.client()
    for _ in range(3):
        await client.chat.completions.create(model="fake-model", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        [c async for c in stream]
    rows = await proxy.rows()
    assert len(rows) == 6 and all(r["prompt_tokens"] and r["completion_tokens"] for r in rows)
    assert recorder.stats.written == 6 and recorder.stats.batches >= 1
    # The hook ran here, on the serving loop, with the usage the child decoded (bodies left there).
    assert len(seen) == 6 and all(ex.usage.prompt_tokens for ex in seen)
    assert all(ex.response_body == b"" for ex in seen)
    lag = recorder.lag_ms()
    assert lag["p50"] is not None and 0 <= lag["p50"] <= lag["p99"] < 10_000
    await proxy.server.close()  # the app's cleanup closes the recorder: the child finishes and exits
    assert recorder.process.returncode == 0


async def test_flush_and_close_wait_for_the_process(database: Database, tmp_path: Path) -> None:
    recorder = Recorder(
        database.engine, spool_dir=tmp_path / "spool", batch_delay=30.0, batch_size=1000, writer=WriterMode.PROCESS
    )
    await recorder.start()
    assert recorder.mode is WriterMode.PROCESS
    for i in range(20):
        recorder.submit(finished_exchange(f"batch-{i}"))
    started = time.monotonic()
    await recorder.flush()  # the child does not wait out its batch_delay either
    assert time.monotonic() - started < 10 and recorder.stats.written == 20
    assert recorder.queue_depth == 0 and recorder.intake.bytes == 0
    for i in range(20, 30):
        recorder.submit(finished_exchange(f"batch-{i}"))
    await recorder.close()
    assert recorder.stats.written == 30 and len(await database.rows()) == 30


async def test_a_writer_process_that_dies_is_restarted_and_nothing_it_held_is_lost(
    database: Database, tmp_path: Path
) -> None:
    recorder = Recorder(
        database.engine, spool_dir=tmp_path / "spool", batch_delay=30.0, batch_size=1000, writer=WriterMode.PROCESS
    )
    await recorder.start()
    assert recorder.process is not None
    first = recorder.process.pid
    assert first is not None
    for i in range(10):
        recorder.submit(finished_exchange(f"held-{i}"))
    await asyncio.sleep(0.3)  # the child has them, waiting out its batch delay
    assert recorder.stats.written == 0 and recorder.queue_depth == 10
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while recorder.process.pid == first or not recorder.process.live:
        assert time.monotonic() < deadline, "no new writer process"
        await asyncio.sleep(0.05)
    for i in range(10, 15):
        recorder.submit(finished_exchange(f"held-{i}"))
    await recorder.flush()
    assert recorder.stats.thread_restarts == 1 and recorder.stats.dropped == 0
    assert recorder.stats.written == 15 and len(await database.rows()) == 15
    await recorder.close()
    assert len(await database.rows()) == 15


async def test_a_writer_process_that_cannot_start_leaves_a_thread_writing(
    database: Database, tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(process_module.sys, "executable", "/bin/false")  # exits at once, every time
    recorder = Recorder(database.engine, spool_dir=tmp_path / "spool", writer=WriterMode.PROCESS)
    await recorder.start()
    assert recorder.mode is WriterMode.THREAD
    assert any("did not start" in r.getMessage() for r in caplog.records)
    recorder.submit(finished_exchange("fallback-0"))
    await recorder.close()
    assert len(await database.rows()) == 1


async def test_writer_processes_that_keep_failing_to_start_leave_a_thread_with_their_records(
    database: Database, tmp_path: Path, monkeypatch
) -> None:
    recorder = Recorder(
        database.engine, spool_dir=tmp_path / "spool", batch_delay=30.0, batch_size=1000, writer=WriterMode.PROCESS
    )
    await recorder.start()
    assert recorder.process is not None and recorder.process.pid is not None
    for i in range(6):
        recorder.submit(finished_exchange(f"orphan-{i}"))
    await asyncio.sleep(0.3)
    monkeypatch.setattr(process_module.sys, "executable", "/bin/false")  # no child will start again
    os.kill(recorder.process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while recorder.mode is not WriterMode.THREAD:
        assert time.monotonic() < deadline, "no fallback to a thread"
        await asyncio.sleep(0.05)
    recorder.submit(finished_exchange("orphan-6"))
    await recorder.flush()
    await recorder.close()
    # The six the dead child held went through the spool; none lost, none twice.
    assert len(await database.rows()) == 7 and recorder.stats.dropped == 0


async def test_a_writer_process_that_hangs_at_shutdown_is_stopped_and_what_it_held_spooled(
    database: Database, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(process_module, "CLOSE_TIMEOUT", 1.0)
    monkeypatch.setattr(recorder_module, "CLOSE_TIMEOUT", 1.0)
    recorder = Recorder(
        database.engine, spool_dir=tmp_path / "spool", batch_delay=30.0, batch_size=1000, writer=WriterMode.PROCESS
    )
    await recorder.start()
    assert recorder.process is not None and recorder.process.pid is not None
    pid = recorder.process.pid
    for i in range(4):
        recorder.submit(finished_exchange(f"hung-{i}"))
    await asyncio.sleep(0.3)
    os.kill(pid, signal.SIGSTOP)  # alive, answering nothing
    started = time.monotonic()
    await recorder.close()
    assert time.monotonic() - started < 20 and not _alive(pid)
    assert recorder.stats.spooled == 4 and recorder.spool_files()
    later = Recorder(database.engine, spool_dir=tmp_path / "spool", writer=WriterMode.PROCESS)
    await later.start()  # the next start writes the spool back
    await later.close()
    assert len(await database.rows()) == 4


def test_a_kill_9_of_the_serving_process_leaves_the_writer_writing_all_it_was_handed(tmp_path: Path) -> None:
    proc, port = start_serve("--demo", "--db", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", cwd=tmp_path)
    try:
        writer = writer_of(proc.pid)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        for i in range(40):
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": f"n{i}"}])
        time.sleep(0.1)  # past the channel's FLUSH_EVERY: the last record has left the serving process
    finally:
        stop_serve(proc, signal.SIGKILL)  # the serving process only: the writer is in a session of its own
    assert ends_soon(writer, timeout=30), "the writer exits once it wrote what it held"
    with sqlite3.connect(tmp_path / "p.db") as conn:
        assert conn.execute("SELECT count(*) FROM exchanges").fetchone()[0] == 40


@pytest.mark.parametrize("mode", ["record", "passthrough"])
async def test_a_finished_exchange_is_freed_when_its_request_ends(start_proxy: ProxyFactory, mode: str) -> None:
    """Not left to the cycle collector: an exchange and its tap refer to each other, and hundreds of them
    waiting for a full collection held 40-60 MB at 500 streams (the benchmark's peak RSS)."""
    proxy: Proxy = await start_proxy(mode=mode, recorder={"writer": "process"})
    client = proxy.client()
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
            [c async for c in stream]
            await client.chat.completions.create(model="fake-model", messages=MESSAGES)
        deadline = time.monotonic() + 5  # the handlers' last steps run after the client read the end
        while alive := [type(o).__name__ for o in gc.get_objects() if isinstance(o, (Exchange, BodyTap))]:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    finally:
        gc.enable()
    assert alive == []
    if mode == "record":
        assert len(await proxy.rows()) == 10
