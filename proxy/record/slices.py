"""Long recording work done in slices, so the event loop it shares with client traffic never waits long.

Invariants:
- A step is a bounded piece of work (a window of a body, a slice of a stream); ``complete`` runs the
  steps of a generator and yields to the loop whenever ``YIELD_EVERY`` seconds of them have run (or
  what the caller gives: the serving loop's catch-up yields after every step);
  ``run_through`` runs them in one go (a thread with no loop to share, such as the spooler).
- Works on whatever loop runs it (the proxy's, or a writer's own): it only awaits ``asyncio.sleep(0)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")

# Seconds of recording work between two yields to the event loop.
YIELD_EVERY = 0.001


async def complete(steps: Generator[None, None, T], every: float = YIELD_EVERY) -> T:
    """Run ``steps`` to its end, yielding to the loop between steps every ``every`` seconds; its return value."""
    started = time.perf_counter()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        if time.perf_counter() - started > every:
            await asyncio.sleep(0)
            started = time.perf_counter()


def run_through(steps: Generator[None, None, T]) -> T:
    """Run ``steps`` to its end at once; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
