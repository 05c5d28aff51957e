"""The queue's byte bound: what it cannot hold is spooled off the serving loop, masked, and written back."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from proxy.record.exchange import Exchange
from proxy.record.recorder import Recorder
from proxy.record.spool import Spool
from tests.support import Database
from tests.support.traffic import finished_exchange

KEY = "sk-proj-" + "o" * 40
BODY = b'{"model": "m", "user": "' + KEY.encode() + b'", "messages": [], "pad": "' + b"x" * 20_000 + b'"}'


def _exchange(i: int) -> Exchange:
    return finished_exchange(f"o-{i}", BODY)


async def test_past_the_byte_bound_records_are_spooled_off_the_loop_then_written_back(
    database: Database, tmp_path: Path, monkeypatch
) -> None:
    writes: list[tuple[str, bytes]] = []
    serving = threading.current_thread()
    holding = threading.Event()  # a spool write has begun
    release = threading.Event()
    stalled: list[bytes] = []
    real_write = Spool.write

    def held_write(self: Spool, data: bytes) -> Path:
        writes.append((threading.current_thread().name, data))
        if threading.current_thread() is not serving:  # (on the serving thread it would hang the test)
            holding.set()
            if not release.wait(60):  # a disk that does not answer until the serving loop lets it
                stalled.append(data)  # it never did: the loop was waiting on this very write
        return real_write(self, data)

    monkeypatch.setattr(Spool, "write", held_write)
    # Two records fit under the bound; the writer waits a long batch_delay, so the queue stays full.
    recorder = Recorder(
        database.engine, spool_dir=tmp_path / "spool", queue_max_bytes=2 * len(BODY) + 5000, batch_delay=30.0
    )
    await recorder.start()
    try:
        for i in range(12):
            recorder.submit(_exchange(i))
            await asyncio.sleep(0.01)
        assert recorder.queue_depth <= 2 and recorder.intake.bytes <= recorder.intake.max_bytes
        assert recorder.stats.overflowed >= 10
        assert await asyncio.to_thread(holding.wait, 60), "nothing was spooled"
        release.set()  # by the serving loop, which runs on while the disk holds a spool write
        await recorder.flush()
        assert not stalled, "the serving loop waited on a spool write"
        stats = recorder.stats
        assert stats.spooled == stats.overflowed and stats.dropped == 0
        assert writes and {name for name, _ in writes} == {"proxy-recorder-spooler"}
        assert all(KEY.encode() not in data for _, data in writes), "a spooled record kept its key"
        deadline = time.monotonic() + 60
        while stats.unspooled < stats.spooled:  # written back once the writer has nothing queued
            assert time.monotonic() < deadline, f"{stats.unspooled} of {stats.spooled} written back"
            await asyncio.sleep(0.05)
    finally:
        release.set()
        await recorder.close()
    rows = await database.rows()
    assert len(rows) == 12 and not recorder.spool_files()
    assert recorder.stats.written == 12


async def test_the_count_bound_spools_too(database: Database, tmp_path: Path) -> None:
    recorder = Recorder(database.engine, spool_dir=tmp_path / "spool", queue_size=3, batch_delay=30.0)
    await recorder.start()
    for i in range(10):
        recorder.submit(_exchange(i))
    await recorder.close()
    assert recorder.stats.overflowed >= 7 and recorder.stats.dropped == 0
    assert len(await database.rows()) == 10 and not recorder.spool_files()
