"""The loop sampler: a step that holds the loop shows up as its longest hold, in the right second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from proxy.bench import loopwatch


async def test_a_step_holding_the_loop_is_measured(tmp_path: Path) -> None:
    path = tmp_path / "loop.jsonl"
    sampler = asyncio.create_task(loopwatch.sample(path))
    await asyncio.sleep(0.05)
    since = time.time()
    await asyncio.sleep(0.3)
    held = time.thread_time()
    while time.thread_time() - held < 0.04:  # a step holding the loop for 40 ms of CPU (however busy the machine)
        pass
    await asyncio.sleep(0.5)  # the period ends and is written
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    seen = loopwatch.window(path, since, time.time())
    assert seen is not None
    assert seen["cpu_ms"] >= 35 and seen["wall_ms"] >= 35
    assert loopwatch.window(path, time.time() + 60, time.time() + 120) is None
