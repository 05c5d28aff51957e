"""The recorder: outage and spool, drain on close, batching under a delay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from proxy.record.exchange import Exchange
from proxy.record.recorder import Recorder
from proxy.record.writer import Writer
from proxy.usage.pricing import PriceTable
from tests.support import Database, FaultReport, Proxy, ProxyFactory
from tests.support.traffic import finished_exchange

MESSAGES = [{"role": "user", "content": "hello there"}]


async def _rename(database: Database, old: str, new: str) -> None:
    async with database.engine.begin() as conn:
        await conn.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")


async def _health(proxy: Proxy) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{proxy.url}/_proxy/health") as resp:
        return await resp.json()


async def test_database_outage_spools_to_disk_then_writes_back(
    proxy: Proxy, database: Database, fault_report: FaultReport
) -> None:
    client = proxy.client()
    await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    await proxy.recorder.flush()

    # The table disappears from under the writer: every insert now fails, on SQLite and PostgreSQL alike.
    await _rename(database, "exchanges", "exchanges_away")
    for _ in range(5):
        await client.chat.completions.create(model="fake-model", messages=MESSAGES)
        stream = await client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
        [c async for c in stream]
    await proxy.recorder.flush()
    stats = proxy.recorder.stats
    assert not stats.database_ok and stats.spooled == 10 and stats.dropped == 0
    assert proxy.recorder.spool_files()
    health = await _health(proxy)
    assert health["status"] == "degraded" and health["database"]["ok"] is False
    assert health["recorder"]["spooled"] == 10

    await _rename(database, "exchanges_away", "exchanges")
    await asyncio.sleep(0.25)  # past retry_interval
    await client.chat.completions.create(model="fake-model", messages=MESSAGES)
    rows = await proxy.rows()
    fault_report.add(f"{database.kind}: database unusable mid-run (table gone)", 10, 12 - len(rows), "normal answers")
    assert len(rows) == 12, "1 before, 10 spooled during the outage, 1 after"
    assert len({r["id"] for r in rows}) == 12
    assert not proxy.recorder.spool_files()
    assert proxy.recorder.stats.database_ok and proxy.recorder.stats.unspooled == 10
    assert (await _health(proxy))["status"] == "ok"
    bodies = await proxy.bodies()
    assert set(bodies) == {r["id"] for r in rows}


async def test_spool_left_by_a_previous_run_is_written_at_start(database: Database, tmp_path: Path) -> None:
    dead = Recorder(database.engine, spool_dir=tmp_path / "spool")
    batch = [Exchange(method="POST", path="/v1/chat/completions", status=200) for _ in range(3)]
    for ex in batch:
        ex.finish()
    dead.shelf.put(batch)
    assert len(dead.spool_files()) == 1

    fresh = Recorder(database.engine, spool_dir=tmp_path / "spool", retry_interval=0)
    await fresh.start()
    fresh.submit(Exchange(method="GET", path="/v1/models", status=200))
    await fresh.close()
    rows = await database.rows()
    assert {r["id"] for r in rows} >= {ex.id for ex in batch}
    assert len(rows) == 4 and not fresh.spool_files()


async def test_close_drains_the_queue(database: Database, tmp_path: Path) -> None:
    recorder = Recorder(database.engine, spool_dir=tmp_path / "spool", batch_size=7)
    await recorder.start()
    ids = []
    for _ in range(50):
        ex = Exchange(method="GET", path="/v1/models", status=200)
        ex.finish()
        ids.append(ex.id)
        recorder.submit(ex)
    await recorder.close()
    rows = await database.rows(order="id")
    assert [r["id"] for r in rows] == sorted(ids)
    assert recorder.stats.batches >= 50 // 7


async def test_full_spool_drops_and_counts(database: Database, tmp_path: Path) -> None:
    recorder = Recorder(database.engine, spool_dir=tmp_path / "spool", spool_max_bytes=10)
    recorder.shelf.put([Exchange()])
    assert recorder.stats.dropped == 1 and recorder.stats.spooled == 0


def _exchange(i: int) -> Exchange:
    return finished_exchange(f"batch-{i}")


async def _wait_written(recorder: Recorder, n: int, timeout: float) -> float:
    started = time.monotonic()
    while recorder.stats.written < n:
        assert time.monotonic() - started < timeout, f"only {recorder.stats.written} of {n} written"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_records_arriving_one_by_one_share_a_transaction(database: Database, tmp_path: Path) -> None:
    delay = 3.0  # far longer than five submissions take, even on a loaded machine
    recorder = Recorder(database.engine, batch_delay=delay, spool_dir=tmp_path / "spool")
    await recorder.start()
    try:
        started = time.monotonic()
        for i in range(5):
            recorder.submit(_exchange(i))
            await asyncio.sleep(0.01)  # the writer is idle and awake between submissions
        assert time.monotonic() - started < delay, "the loop was too slow to submit within one batch delay"
        await _wait_written(recorder, 5, timeout=delay + 60)
        assert recorder.stats.batches == 1
        assert len(await database.rows()) == 5
    finally:
        await recorder.close()


async def test_flush_full_batch_and_close_do_not_wait_for_the_delay(database: Database, tmp_path: Path) -> None:
    recorder = Recorder(database.engine, batch_size=3, batch_delay=30.0, spool_dir=tmp_path / "spool")
    await recorder.start()
    try:
        recorder.submit(_exchange(0))
        started = time.monotonic()
        await recorder.flush()
        assert time.monotonic() - started < 5 and recorder.stats.written == 1

        for i in range(1, 4):  # a full batch goes at once
            recorder.submit(_exchange(i))
        assert await _wait_written(recorder, 4, timeout=5) < 5

        recorder.submit(_exchange(4))
        await asyncio.sleep(0.05)  # the writer is now waiting for the batch to fill
    finally:
        started = time.monotonic()
        await recorder.close()
    assert time.monotonic() - started < 5
    assert recorder.stats.written == 5 and len(await database.rows()) == 5


async def test_a_writer_that_dies_is_restarted_and_health_says_so(start_proxy: ProxyFactory, monkeypatch) -> None:
    proxy = await start_proxy(recorder={"writer": "thread"})  # the patch below reaches a thread, not a process
    recorder = proxy.recorder
    real_gather = Writer._gather
    crashes = iter([RuntimeError("a bug in the writer")])

    async def gather_that_dies_once(self: Writer) -> None:
        for crash in crashes:  # outside any batch's protection: the writer itself dies (nothing taken yet)
            raise crash
        await real_gather(self)

    monkeypatch.setattr(Writer, "_gather", gather_that_dies_once)
    client = proxy.client()
    await client.models.list()
    assert len(await proxy.rows()) == 1
    await client.models.list()
    assert len(await proxy.rows()) == 2
    await client.models.list()
    assert len(await proxy.rows()) == 3
    assert recorder.stats.writer_restarts == 1 and recorder.stats.quarantined == 0
    health = await _health(proxy)
    assert health["status"] == "ok"
    error = "RuntimeError: a bug in the writer"
    assert health["writer"] == {"mode": "thread", "pid": None, "restarts": 1, "thread_restarts": 0, "last_error": error}


async def test_an_on_written_hook_that_raises_does_not_spool_the_batch_again(
    database: Database, tmp_path: Path
) -> None:
    def hook(batch: list[Exchange]) -> None:
        raise ValueError("metrics broke")

    recorder = Recorder(database.engine, spool_dir=tmp_path / "spool", on_written=hook)
    await recorder.start()
    for i in range(3):
        recorder.submit(_exchange(i))
    await recorder.close()
    assert recorder.stats.written == 3 and recorder.stats.spooled == 0 and recorder.stats.dropped == 0
    assert not recorder.spool_files() and len(await database.rows()) == 3


async def test_a_failed_spool_write_leaves_no_partial_file(database: Database, tmp_path: Path, monkeypatch) -> None:
    recorder = Recorder(database.engine, spool_dir=tmp_path / "spool")
    real_open = open

    class FullDisk:
        def __init__(self, path: Path, mode: str) -> None:
            self.file = real_open(path, mode)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, data: bytes) -> int:
            self.file.write(data[:10])
            raise OSError(28, "No space left on device")

    import proxy.record.spool as spool_module

    monkeypatch.setattr(spool_module, "open", FullDisk, raising=False)
    for _ in range(3):
        recorder.shelf.put([_exchange(0)])
    assert recorder.stats.dropped == 3 and recorder.stats.spooled == 0
    assert list((tmp_path / "spool").iterdir()) == [], "no spool-*.tmp left behind"


async def test_spool_is_retried_on_a_timer_without_traffic(proxy: Proxy, database: Database) -> None:
    client = proxy.client()
    await _rename(database, "exchanges", "exchanges_away")
    await client.models.list()
    await proxy.recorder.flush()
    assert not proxy.recorder.stats.database_ok and proxy.recorder.spool_files()
    await _rename(database, "exchanges_away", "exchanges")
    # No request from now on: the writer's own timer (retry_interval 0.2 s here) writes the spool back.
    for _ in range(100):
        if proxy.recorder.stats.database_ok:
            break
        await asyncio.sleep(0.05)
    assert (await _health(proxy))["status"] == "ok"
    assert not proxy.recorder.spool_files() and len(await database.rows()) == 1


class _BrokenPrices(PriceTable):
    def apply(self, ex: Exchange) -> None:
        raise RuntimeError("pricing broke")


async def test_a_record_quarantined_before_its_masking_step_reaches_the_disk_masked(
    database: Database, tmp_path: Path
) -> None:
    key = "sk-proj-" + "q" * 40
    recorder = Recorder(database.engine, spool_dir=tmp_path / "spool", pricing=_BrokenPrices())
    await recorder.start()
    ex = Exchange(method="POST", path="/v1/chat/completions", status=200)
    ex.request_body = b'{"model": "m", "user": "' + key.encode() + b'", "messages": []}'
    ex.user = key
    ex.finish()
    recorder.submit(ex)
    await recorder.close()
    assert recorder.stats.quarantined == 1
    [quarantine] = recorder.spool.quarantine_files()
    kept = quarantine.read_bytes()
    assert key.encode() not in kept and b"pricing broke" in kept
    assert ex.id.encode() in kept
