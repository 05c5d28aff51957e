"""The recorder's batch delay: records arriving one at a time are written in one transaction, and a
flush, a full batch or close never waits for the delay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from proxy.record.exchange import Exchange
from proxy.record.recorder import Recorder
from tests.conftest import Database

DELAY = 0.5


def _exchange(i: int) -> Exchange:
    ex = Exchange(method="POST", path="/v1/chat/completions", session_id=f"batch-{i}", status=200)
    ex.response_headers = {"content-type": "application/json"}
    ex.response_body = b'{"usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}'
    ex.finish()
    return ex


async def _wait_written(recorder: Recorder, n: int, timeout: float) -> float:
    started = time.monotonic()
    while recorder.stats.written < n:
        assert time.monotonic() - started < timeout, f"only {recorder.stats.written} of {n} written"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_records_arriving_one_by_one_share_a_transaction(database: Database, tmp_path: Path) -> None:
    recorder = Recorder(database.engine, batch_delay=DELAY, spool_dir=tmp_path / "spool")
    await recorder.start()
    try:
        for i in range(5):
            recorder.submit(_exchange(i))
            await asyncio.sleep(0.01)  # the writer is idle and awake between submissions
        await _wait_written(recorder, 5, timeout=DELAY * 4)
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
