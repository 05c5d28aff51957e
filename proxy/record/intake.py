"""The intake: the queue between the serving loop and the writer's thread, bounded by count and by bytes.

Invariants:
- ``put`` never blocks on the writer and never raises: a lock held for a deque append and a few counters.
  It wakes the writer (``loop.call_soon_threadsafe``) only when the writer sleeps waiting for that many
  records: a busy writer takes what is queued when it comes back, so submitting costs no syscall.
- The queue holds at most ``max_items`` records and ``max_bytes`` of their estimated size (``size_of``):
  ``put`` returns False past either bound and the caller spools the record instead (``record.overflow``).
- ``submitted`` counts every record handed to the recorder (queued or overflowed), ``finished`` every
  one written, spooled, quarantined or dropped; ``wait_for`` resolves when ``finished`` reaches a count,
  on the waiter's own loop.
- Lag (exchange end to commit, ms) is kept as a reservoir of the last ``LAG_KEPT`` values.
- With a writer process (``record.process``) the items are the frames sent to it, kept until it says
  they finished (``release``), in order: so they can be sent again to a writer process started after
  one died, and the bounds count what the child holds. ``on_done`` (the child's own intake) tells the
  serving process each time records finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from proxy.record.exchange import Exchange

LAG_KEPT = 2048
# What a record costs beyond its bodies and headers (the Struct, its small fields, the deque slot).
RECORD_OVERHEAD = 1024


def size_of(ex: Exchange) -> int:
    """An estimate of the memory a queued record holds: bodies, the tap's kept bytes, headers."""
    size = RECORD_OVERHEAD + len(ex.request_body) + len(ex.response_body)
    tap = ex.body_tap
    if tap is not None:
        size += tap.retained
    for headers in (ex.request_headers, ex.response_headers):
        size += sum(map(len, headers)) + sum(map(len, headers.values()))
    return size


def ended_at(ex: Exchange) -> float:
    """``perf_counter()`` when the exchange ended."""
    return ex.t0 + (ex.duration_ms or 0.0) / 1000


class Intake:
    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        # Exchanges, or with a writer process the frames it was sent (``release``).
        self._items: deque[tuple[Any, int]] = deque()
        self.bytes = 0
        self.submitted = 0
        self.finished = 0
        self.max_depth = 0
        self.hurry = 0  # flushes waiting, or 1 while closing: the writer does not wait for a batch to fill
        self._wake: Callable[[], None] | None = None
        self._wake_at = 0
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lag: deque[float] = deque(maxlen=LAG_KEPT)
        self.on_done: Callable[[int, list[float] | None], None] | None = None

    @property
    def depth(self) -> int:
        return len(self._items)

    def put(self, ex: Any, size: int) -> bool:
        """Queue a record (or its frame); False (nothing queued) when it would pass a bound."""
        with self.lock:
            self.submitted += 1
            items = self._items
            if len(items) >= self.max_items or (items and self.bytes + size > self.max_bytes):
                return False
            items.append((ex, size))
            self.bytes += size
            depth = len(items)
            if depth > self.max_depth:
                self.max_depth = depth
            wake = self._wake if depth >= self._wake_at else None
            if wake is not None:
                self._wake = None
        if wake is not None:
            wake()
        return True

    def counted(self) -> None:
        """A record that went elsewhere before ``put`` (it could not even be sized): submitted all the same."""
        with self.lock:
            self.submitted += 1

    def take(self, n: int) -> list[Exchange]:
        with self.lock:
            items = self._items
            batch = []
            while items and len(batch) < n:
                ex, size = items.popleft()
                self.bytes -= size
                batch.append(ex)
        return batch

    def held(self) -> list[Any]:
        """What is queued, oldest first, left in place (the frames a new writer process is sent again)."""
        with self.lock:
            return [item for item, _ in self._items]

    def release(self, n: int, lags_ms: list[float] | None) -> None:
        """The writer process finished the ``n`` oldest records it was sent: they leave the queue, done."""
        with self.lock:
            items = self._items
            for _ in range(min(n, len(items))):
                self.bytes -= items.popleft()[1]
        self.done(n, lags_ms)

    def oldest_end(self) -> float | None:
        with self.lock:
            return ended_at(self._items[0][0]) if self._items else None

    async def sleep(self, until_depth: int, timeout: float | None) -> None:
        """Wait until ``until_depth`` records are queued, someone hurries, or ``timeout`` seconds passed."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(_resolve, woken)

        with self.lock:
            if len(self._items) >= until_depth or (self.hurry and self._items):
                return
            self._wake, self._wake_at = wake, until_depth
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken, timeout)
        finally:
            with self.lock:
                if self._wake is wake:
                    self._wake = None

    def nudge(self) -> None:
        """Wake a sleeping writer whatever it waits for (a flush, close, a restart)."""
        with self.lock:
            wake, self._wake = self._wake, None
        if wake is not None:
            wake()

    def done(self, n: int, lags_ms: list[float] | None = None) -> None:
        """``n`` records left the writer or the spooler, for good; resolve the waits that reached their count."""
        with self.lock:
            self.finished += n
            if lags_ms:
                self._lag.extend(lags_ms)
            ready = [w for w in self._waiters if w[0] <= self.finished]
            if ready:
                self._waiters = [w for w in self._waiters if w[0] > self.finished]
        for _, loop, fut in ready:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, fut)
        if self.on_done is not None:
            self.on_done(n, lags_ms)

    def wait_for(self, count: int) -> asyncio.Future[None] | None:
        """A future resolved once ``count`` records finished; None when they already have."""
        with self.lock:
            if self.finished >= count:
                return None
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((count, loop, fut))
            return fut

    def lag_ms(self) -> dict[str, float | None]:
        """p50 and p99 of the recent lags, in ms (None before any record was written)."""
        with self.lock:
            values = sorted(self._lag)
        if not values:
            return {"p50": None, "p99": None}
        pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))], 1)  # noqa: E731
        return {"p50": pick(0.5), "p99": pick(0.99)}


def lag_since(ended: float) -> float:
    return (time.perf_counter() - ended) * 1000


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
