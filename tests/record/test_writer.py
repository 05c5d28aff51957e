"""The writer thread: records stored from its own loop and engine, lag measured, its death survived."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import aiohttp
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import StaticPool

from proxy.record.exchange import Exchange
from proxy.record.recorder import Recorder
from proxy.record.writer import Writer
from proxy.store import db
from proxy.store.migrate import upgrade
from proxy.store.writes import insert_exchanges
from tests.support import Database, Proxy, ProxyFactory
from tests.support.traffic import finished_exchange

MESSAGES = [{"role": "user", "content": "hello there"}]


async def _health(proxy: Proxy) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{proxy.url}/_proxy/health") as resp:
        return await resp.json()


async def test_records_are_stored_from_the_writer_thread_and_health_reports_the_lag(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(recorder={"writer": "thread"})
    seen: list[tuple[str, int]] = []
    recorder = proxy.recorder
    real_hook = recorder.on_written

    def hook(batch: list[Exchange]) -> None:
        seen.append((threading.current_thread().name, len(batch)))
        if real_hook is not None:
            real_hook(batch)

    assert recorder.threaded and recorder.writer is not None
    recorder.writer.on_written = hook
    client = proxy.client()
    for _ in range(3):
        await client.chat.completions.create(model="fake-model", messages=MESSAGES)
        stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
        [c async for c in stream]
    rows = await proxy.rows()
    assert len(rows) == 6 and all(r["prompt_tokens"] for r in rows)
    assert {name for name, _ in seen} == {"proxy-recorder-writer"}
    assert sum(n for _, n in seen) == 6
    health = (await _health(proxy))["recorder"]
    assert health["written"] == 6 and health["max_queue_depth"] >= 1 and health["last_batch_ms"] > 0
    lag = health["lag_ms"]
    assert 0 <= lag["p50"] <= lag["p99"] < 10_000


class _ThreadKiller(BaseException):
    """Not an Exception: nothing in the writer catches it, so it ends the writer's thread."""


async def test_a_writer_thread_that_dies_is_restarted_and_its_batch_is_not_lost(
    start_proxy: ProxyFactory, monkeypatch
) -> None:
    proxy = await start_proxy(recorder={"writer": "thread"})  # the patch below reaches a thread, not a process
    real_write = Writer._write
    kills = iter([_ThreadKiller("the thread dies")])

    async def write_that_kills_the_thread(self: Writer, batch: list[Exchange]) -> list[float] | None:
        for kill in kills:  # holding a batch: the front must rescue it
            raise kill
        return await real_write(self, batch)

    monkeypatch.setattr(Writer, "_write", write_that_kills_the_thread)
    client = proxy.client()
    await client.models.list()
    await client.models.list()
    deadline = time.monotonic() + 20
    while len(await proxy.rows()) < 2:
        assert time.monotonic() < deadline, "the records of a dead thread never reached the database"
        await asyncio.sleep(0.05)
    recorder = proxy.recorder
    assert recorder.stats.thread_restarts == 1 and recorder.stats.dropped == 0
    assert (await _health(proxy))["writer"]["thread_restarts"] == 1
    await client.models.list()  # the new thread records as the old one did
    assert len(await proxy.rows()) == 3


async def test_flush_and_close_wait_for_the_thread(database: Database, tmp_path: Path) -> None:
    recorder = Recorder(database.engine, spool_dir=tmp_path / "spool", batch_delay=30.0, batch_size=1000)
    await recorder.start()
    assert recorder.threaded
    for i in range(20):
        recorder.submit(finished_exchange(f"batch-{i}"))
    started = time.monotonic()
    await recorder.flush()
    assert time.monotonic() - started < 10 and recorder.stats.written == 20
    for i in range(20, 30):
        recorder.submit(finished_exchange(f"batch-{i}"))
    await recorder.close()
    assert recorder.stats.written == 30 and len(await database.rows()) == 30
    assert not any(t.name == "proxy-recorder-writer" for t in threading.enumerate())


async def test_in_memory_sqlite_keeps_the_writer_on_the_serving_loop(tmp_path: Path) -> None:
    url = "sqlite+aiosqlite:///file:writer_mem?mode=memory&cache=shared&uri=true"
    engine = db.create_engine(url, poolclass=StaticPool)
    try:
        assert db.sibling_engine(engine) is None  # another pool would open another, empty, database
        async with engine.connect() as keep:  # a shared-cache memory database lives while a connection does
            await upgrade(engine)
            recorder = Recorder(engine, spool_dir=tmp_path / "spool")
            await recorder.start()
            assert not recorder.threaded
            recorder.submit(finished_exchange("batch-0"))
            await recorder.close()
            assert recorder.stats.written == 1
            assert (await keep.exec_driver_sql("SELECT count(*) FROM exchanges")).scalar() == 1
    finally:
        await engine.dispose()


def _spool_left_behind(database: Database, tmp_path: Path, n: int) -> list[Exchange]:
    """A spool file of ``n`` records, as an earlier recorder left it (``Recorder(...).shelf.put``)."""
    batch = [finished_exchange(f"spooled-{i}") for i in range(n)]
    Recorder(database.engine, spool_dir=tmp_path / "spool").shelf.put(batch)
    return batch


async def test_records_written_back_again_are_counted_once(database: Database, tmp_path: Path) -> None:
    """A spool file whose write-back committed but which stayed on disk (the process was killed before it
    went, or a stop came between the two): written back again, its records are stored and counted once."""
    batch = _spool_left_behind(database, tmp_path, 4)
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, batch[:3])
    seen: list[str] = []
    recorder = Recorder(
        database.engine, spool_dir=tmp_path / "spool", retry_interval=0,
        on_written=lambda stored: seen.extend(ex.id for ex in stored),
    )  # fmt: skip
    await recorder.start()
    live = finished_exchange("live")
    recorder.submit(live)
    await recorder.close()
    assert len(await database.rows()) == 5 and not recorder.spool_files()
    assert recorder.stats.written == 2, "only the rows this recorder added"
    assert sorted(seen) == sorted([batch[3].id, live.id]), "on_written (the metrics) gets those only"
    assert recorder.stats.unspooled == 4 and recorder.stats.dropped == 0


async def test_a_stop_right_after_a_write_back_committed_still_counts_it(
    database: Database, tmp_path: Path, monkeypatch
) -> None:
    """The recorder closes (cancelling the writer) while a write-back's connection is released, after its
    commit: the write is finished and counted, the file's second write-back adds nothing and counts nothing."""
    _spool_left_behind(database, tmp_path, 3)
    committed = threading.Event()
    real_close = AsyncConnection.close

    async def close_then_wait_for_the_stop(self: AsyncConnection) -> None:
        await real_close(self)
        if threading.current_thread().name != "proxy-recorder-writer" or committed.is_set():
            return
        committed.set()
        # Held until the stop has asked the writer's task to end: the cancellation lands in this window.
        while not any(t.get_name() == "proxy-recorder" and t.cancelling() for t in asyncio.all_tasks()):
            await asyncio.sleep(0.005)

    monkeypatch.setattr(AsyncConnection, "close", close_then_wait_for_the_stop)
    recorder = Recorder(database.engine, spool_dir=tmp_path / "spool", retry_interval=0)
    await recorder.start()
    assert await asyncio.to_thread(committed.wait, 60), "the spool was never written back"
    await recorder.close()
    assert len(await database.rows()) == 3 and not recorder.spool_files()
    assert recorder.stats.written == 3 and recorder.stats.unspooled == 3
