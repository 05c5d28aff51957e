"""The recorder: a bounded queue in front of one batching writer task.

Failure policy (fail open for traffic, closed for data):
- ``submit`` never blocks and never raises: the request path does not wait on the database, ever.
- The writer takes whatever is queued (up to ``batch_size``) as one batch, so batches grow with load.
  After the first record of a batch it waits up to ``batch_delay`` seconds for more (cut short when
  the batch fills, on ``flush()`` and on ``close()``): one transaction costs far more CPU than one row,
  so a proxy serving requests one at a time writes them in groups instead of a transaction each.
  Decoding (``decode.finalize``) and pricing (``PriceTable.apply``) happen here too, after the client
  already has its response.
- When a write fails (database down, locked, read-only, ...) the batch is appended to a spool on local
  disk and the database is marked down: the outage is logged once, later batches go straight to the
  spool, and the database is probed every ``retry_interval`` seconds. When it answers again the spool
  is written back in order (inserts are idempotent) and normal writing resumes.
- Records are dropped only when the spool is over ``spool_max_bytes`` or the disk refuses the write;
  each drop is counted in ``stats.dropped`` and logged.
- ``close()`` drains the queue (and tries the spool once more) before returning; nothing submitted
  before ``close()`` is lost unless the process is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.record.decode import finalize
from proxy.record.exchange import Exchange
from proxy.record.redact import Redactor
from proxy.record.slices import complete
from proxy.replay.matchkey import DEFAULT_RULES, KeyRules, match_key
from proxy.store.writes import insert_exchanges
from proxy.usage.pricing import PriceTable

log = logging.getLogger("proxy.record.recorder")

# Anything that is not data (a live ``body_tap`` left by a failed step) is spooled as nil.
_SPOOL_ENCODER = msgspec.msgpack.Encoder(enc_hook=lambda _obj: None)
YIELD_EVERY = 0.0005  # seconds of decoding between yields to the event loop
_SPOOL_DECODER = msgspec.msgpack.Decoder(list[Exchange])


class RecorderStats(msgspec.Struct):
    written: int = 0
    spooled: int = 0
    unspooled: int = 0
    dropped: int = 0
    batches: int = 0
    last_batch_ms: float = 0.0
    database_ok: bool = True
    last_error: str | None = None
    down_since: float | None = None


class Recorder:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        spool_dir: str | os.PathLike[str] = "proxy-spool",
        spool_max_bytes: int = 1 << 30,
        retry_interval: float = 2.0,
        batch_delay: float = 0.0,
        on_written: Callable[[list[Exchange]], None] | None = None,
        redactor: Redactor | None = None,
        key_rules: KeyRules = DEFAULT_RULES,
        pricing: PriceTable | None = None,
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.batch_delay = batch_delay
        self.spool_dir = Path(spool_dir)
        self.spool_max_bytes = spool_max_bytes
        self.retry_interval = retry_interval
        self.on_written = on_written
        self.redactor = redactor if redactor is not None else Redactor()
        self.key_rules = key_rules
        self.pricing = pricing
        self.stats = RecorderStats()
        self._queue: asyncio.Queue[Exchange] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._next_probe = 0.0
        self._spool_seq = 0
        self._closing = False
        self._flushing = 0
        self._wake: asyncio.Future[None] | None = None

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def submit(self, ex: Exchange) -> None:
        try:
            self._queue.put_nowait(ex)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.error("recorder queue full (%d); exchange %s dropped", self._queue.maxsize, ex.id)
            return
        if self._wake is not None and self._queue.qsize() >= self.batch_size:
            self._hurry()

    async def start(self) -> None:
        if self.spool_files():
            # Leftovers from an earlier run: try them first, as if recovering from an outage.
            self.stats.database_ok = False
        self._task = asyncio.create_task(self._run(), name="proxy-recorder")

    async def close(self) -> None:
        """Drain the queue, write or spool everything, and stop the writer."""
        self._closing = True
        self._hurry()
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if not self.stats.database_ok:
            await self._try_recover(force=True)

    async def flush(self) -> None:
        """Wait until everything submitted so far has been written or spooled (tests, shutdown)."""
        self._flushing += 1
        try:
            self._hurry()
            await self._queue.join()
        finally:
            self._flushing -= 1

    def _hurry(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _gather(self) -> None:
        """Give a batch ``batch_delay`` to fill up, unless someone is waiting for it."""
        if self.batch_delay <= 0 or self._closing or self._flushing or self._queue.qsize() >= self.batch_size - 1:
            return
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_later(self.batch_delay, self._hurry)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await self._gather()
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except Exception:
                log.exception("recorder: unexpected failure writing a batch of %d", len(batch))
                self._spool(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[Exchange]) -> None:
        slice_start = time.perf_counter()
        for ex in batch:
            if ex.body_tap is not None:
                await ex.body_tap.drain()  # what the tee left undecoded, in slices
            finalize(ex)
            if self.pricing is not None:
                self.pricing.apply(ex)
            if ex.match_key is None:  # playback (auto mode) already keyed it
                # From the body as the client sent it, so a live request finds it again at replay time.
                ex.match_key = match_key(ex.method, ex.path, ex.request_body, self.key_rules, ex.upstream)
            await self._redact(ex)
            if time.perf_counter() - slice_start > YIELD_EVERY:
                # Client traffic shares this event loop: never hold it for long (a 50-event stream takes
                # ~0.3 ms to decode, so a fixed count of records per slice could stall it for many ms).
                await asyncio.sleep(0)
                slice_start = time.perf_counter()
        if not self.stats.database_ok and not await self._try_recover():
            self._spool(batch)
            return
        started = time.perf_counter()
        try:
            async with self.engine.begin() as conn:
                await insert_exchanges(conn, batch)
        except Exception as exc:  # noqa: BLE001 - any database failure means: keep it on disk
            self._mark_down(exc)
            self._spool(batch)
            return
        self.stats.last_batch_ms = (time.perf_counter() - started) * 1000
        self.stats.batches += 1
        self.stats.written += len(batch)
        if self.on_written is not None:
            self.on_written(batch)

    async def _redact(self, ex: Exchange) -> None:
        """Mask secrets in every field taken from a client or upstream, before the database or the spool.

        Bodies are masked a window at a time, yielding to the loop between windows.
        """
        await complete(self.redactor.exchange_steps(ex))

    def _mark_down(self, exc: BaseException) -> None:
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.stats.database_ok:
            log.error("database unavailable, spooling records to %s: %s", self.spool_dir, self.stats.last_error)
            self.stats.database_ok = False
            self.stats.down_since = time.time()
        self._next_probe = time.monotonic() + self.retry_interval

    async def _try_recover(self, *, force: bool = False) -> bool:
        """Write the spool back if the database answers; True when it is fully written."""
        if not force and time.monotonic() < self._next_probe:
            return False
        for path in self.spool_files():
            try:
                batch = _SPOOL_DECODER.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError) as exc:
                log.error("spool file %s unreadable, kept aside: %s", path, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            try:
                async with self.engine.begin() as conn:
                    await insert_exchanges(conn, batch)
            except Exception as exc:  # noqa: BLE001
                self._mark_down(exc)
                return False
            path.unlink(missing_ok=True)
            self.stats.unspooled += len(batch)
            self.stats.written += len(batch)
            if self.on_written is not None:
                self.on_written(batch)
        if not self.stats.database_ok:
            log.warning("database available again; spool written back")
        self.stats.database_ok = True
        self.stats.down_since = None
        self.stats.last_error = None
        return True

    def spool_files(self) -> list[Path]:
        if not self.spool_dir.is_dir():
            return []
        return sorted(self.spool_dir.glob("spool-*.msgpack"))

    def spool_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.spool_files())

    def _spool(self, batch: list[Exchange]) -> None:
        data = _SPOOL_ENCODER.encode(batch)
        if self.spool_bytes() + len(data) > self.spool_max_bytes:
            self._drop(batch, "spool full")
            return
        self._spool_seq += 1
        name = f"spool-{time.time_ns():020d}-{os.getpid()}-{self._spool_seq:06d}.msgpack"
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.spool_dir / (name + ".tmp")
            tmp.write_bytes(data)
            tmp.rename(self.spool_dir / name)
        except OSError as exc:
            self._drop(batch, f"spool write failed: {exc}")
            return
        self.stats.spooled += len(batch)

    def _drop(self, batch: list[Exchange], why: str) -> None:
        self.stats.dropped += len(batch)
        log.error("%s: %d records dropped (total dropped %d)", why, len(batch), self.stats.dropped)
