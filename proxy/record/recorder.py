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
- Every value is made storable first (``record.storable``: bytes that are not UTF-8, and NUL, become
  ``\\xNN``), so no client input can make a batch fail. Should a record still fail (a step raises on
  it, or the database refuses its values: a token count past 64 bits, say), it is retried alone, so it
  never takes its batch with it, and then quarantined: written to ``quarantine-*.jsonl`` in the spool
  folder as received and counted in ``stats.quarantined``; it is never retried by itself. What the
  database refuses for every record (connection lost, timeout, locked, read-only, table gone) is an
  outage, handled as above.
- Records are dropped only when the spool is over ``spool_max_bytes`` or the disk refuses the write;
  each drop is counted in ``stats.dropped`` and logged. A write that fails leaves no partial file.
- While the database is down a timer probes it every ``retry_interval``, with or without traffic.
- ``on_written`` runs after a batch committed; if it raises, that is logged and nothing else changes
  (the batch is stored: it is neither spooled again nor counted twice).
- A supervisor restarts the writer should it ever die (``stats.writer_restarts``, shown by health).
- ``close()`` drains the queue (and tries the spool once more) before returning; nothing submitted
  before ``close()`` is lost unless the process is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.record.decode import finalize
from proxy.record.exchange import Exchange
from proxy.record.redact import Redactor
from proxy.record.slices import complete
from proxy.record.spool import Spool, SpoolFull
from proxy.record.storable import make_storable
from proxy.replay.matchkey import DEFAULT_RULES, KeyRules, match_key
from proxy.store.writes import insert_exchanges
from proxy.usage.pricing import PriceTable

log = logging.getLogger("proxy.record.recorder")

YIELD_EVERY = 0.0005  # seconds of decoding between yields to the event loop
# A writer that died is restarted after this long (doubling, up to retry_interval), not in a hot loop.
RESTART_DELAY = 0.05


class RecorderStats(msgspec.Struct):
    written: int = 0
    spooled: int = 0
    unspooled: int = 0
    dropped: int = 0
    quarantined: int = 0
    writer_restarts: int = 0
    writer_error: str | None = None
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
        self.spool = Spool(spool_dir, spool_max_bytes)
        self.retry_interval = retry_interval
        self.on_written = on_written
        self.redactor = redactor if redactor is not None else Redactor()
        self.key_rules = key_rules
        self.pricing = pricing
        self.stats = RecorderStats()
        self._queue: asyncio.Queue[Exchange] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._next_probe = 0.0
        self._closing = False
        self._flushing = 0
        self._wake: asyncio.Future[None] | None = None

    @property
    def spool_dir(self) -> Path:
        return self.spool.folder

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
        self._task = asyncio.create_task(self._supervise(), name="proxy-recorder")

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

    async def _supervise(self) -> None:
        """Run the writer; should it ever die, log why, count it and start it again."""
        delay = RESTART_DELAY
        while True:
            try:
                await self._run()
            except Exception as exc:
                self.stats.writer_restarts += 1
                self.stats.writer_error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("recorder: the writer died (restart %d)", self.stats.writer_restarts)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max(self.retry_interval, RESTART_DELAY))

    async def _next(self) -> Exchange:
        """The next record; while the database is down, it is probed every ``retry_interval`` meanwhile."""
        while not self.stats.database_ok and not self._closing:
            wait = self._next_probe - time.monotonic()
            if wait <= 0:
                await self._try_recover()
                continue
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self._queue.get(), wait)
        return await self._queue.get()

    async def _run(self) -> None:
        while True:
            batch = [await self._next()]
            try:
                await self._gather()
                while len(batch) < self.batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._write(batch)
            except Exception as exc:
                log.exception("recorder: unexpected failure writing a batch of %d", len(batch))
                self._quarantine([(ex, f"writer failure: {type(exc).__name__}: {exc}") for ex in batch])
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[Exchange]) -> None:
        slice_start = time.perf_counter()
        ready = []
        for ex in batch:
            if await self._prepare(ex):
                ready.append(ex)
            if time.perf_counter() - slice_start > YIELD_EVERY:
                # Client traffic shares this event loop: never hold it for long (a 50-event stream takes
                # ~0.3 ms to decode, so a fixed count of records per slice could stall it for many ms).
                await asyncio.sleep(0)
                slice_start = time.perf_counter()
        if not ready:
            return
        if not self.stats.database_ok and not await self._try_recover():
            self._spool(ready)
            return
        await self._store(ready)

    async def _prepare(self, ex: Exchange) -> bool:
        """Derive, price, key, make storable and mask one record; one that cannot be is quarantined."""
        try:
            if ex.body_tap is not None:
                await ex.body_tap.drain()  # what the tee left undecoded, in slices
            finalize(ex)
            if self.pricing is not None:
                self.pricing.apply(ex)
            if ex.match_key is None:  # playback (auto mode) already keyed it
                # From the body as the client sent it, so a live request finds it again at replay time.
                ex.match_key = match_key(ex.method, ex.path, ex.request_body, self.key_rules, ex.upstream)
            make_storable(ex)
            await self._redact(ex)
        except Exception as exc:
            log.exception("recorder: exchange %s could not be prepared for storage", ex.id)
            self._quarantine([(ex, f"{type(exc).__name__}: {exc}")])
            return False
        return True

    async def _redact(self, ex: Exchange) -> None:
        """Mask secrets in every field taken from a client or upstream, before the database or the spool.

        Bodies are masked a window at a time, yielding to the loop between windows.
        """
        await complete(self.redactor.exchange_steps(ex))

    async def _insert(self, batch: list[Exchange]) -> None:
        async with self.engine.begin() as conn:
            await insert_exchanges(conn, batch)

    async def _store(self, batch: list[Exchange], *, spooled: bool = False) -> bool:
        """Insert a batch; False (and the batch spooled) when the database is down.

        A failure that may be the records' own (``_records_fault``) is retried one record at a time, so a
        record the database refuses is quarantined alone and the others are stored.
        """
        started = time.perf_counter()
        try:
            await self._insert(batch)
        except Exception as exc:  # noqa: BLE001 - sorted below: an outage, or records it refuses
            if not _records_fault(exc):
                self._mark_down(exc)
                if not spooled:
                    self._spool(batch)
                return False
            return await self._store_one_by_one(batch, exc, spooled=spooled)
        if not spooled:
            self.stats.last_batch_ms = (time.perf_counter() - started) * 1000
            self.stats.batches += 1
        self._written(batch, spooled=spooled)
        return True

    async def _store_one_by_one(self, batch: list[Exchange], first: Exception, *, spooled: bool) -> bool:
        if len(batch) == 1:
            self._refused(batch[0], first)
            return True
        for i, ex in enumerate(batch):
            try:
                await self._insert([ex])
            except Exception as exc:  # noqa: BLE001
                if not _records_fault(exc):
                    self._mark_down(exc)
                    if not spooled:
                        self._spool(batch[i:])
                    return False
                self._refused(ex, exc)
                continue
            self._written([ex], spooled=spooled)
        return True

    def _refused(self, ex: Exchange, exc: Exception) -> None:
        log.error("database refused exchange %s (%s: %s); quarantined", ex.id, type(exc).__name__, exc)
        self._quarantine([(ex, f"database refused it: {type(exc).__name__}: {exc}"[:2000])])

    def _written(self, batch: list[Exchange], *, spooled: bool) -> None:
        self.stats.written += len(batch)
        if spooled:
            self.stats.unspooled += len(batch)
        if self.on_written is None:
            return
        try:
            self.on_written(batch)
        except Exception:
            log.exception("recorder: on_written hook failed after a batch of %d was stored", len(batch))

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
                batch = self.spool.read(path)
            except (OSError, msgspec.DecodeError) as exc:
                log.error("spool file %s unreadable, kept aside: %s", path, exc)
                with contextlib.suppress(OSError):
                    self.spool.set_aside(path)
                continue
            if not await self._store(batch, spooled=True):
                return False
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # written again next time: inserts are idempotent
                log.error("spool file %s written back but not removed: %s", path, exc)
        if not self.stats.database_ok:
            log.warning("database available again; spool written back")
        self.stats.database_ok = True
        self.stats.down_since = None
        self.stats.last_error = None
        return True

    def spool_files(self) -> list[Path]:
        return self.spool.files()

    def spool_bytes(self) -> int:
        return self.spool.size()

    def _spool(self, batch: list[Exchange]) -> None:
        try:
            data = self.spool.encode(batch)
        except Exception:  # noqa: BLE001 - a value msgpack cannot hold (an int past 64 bits): split it out
            self._spool_apart(batch)
            return
        try:
            self.spool.write(data)
        except SpoolFull as exc:
            self._drop(batch, str(exc))
            return
        except OSError as exc:
            self._drop(batch, f"spool write failed: {exc}")
            return
        self.stats.spooled += len(batch)

    def _spool_apart(self, batch: list[Exchange]) -> None:
        fit, unfit = [], []
        for ex in batch:
            try:
                self.spool.encode([ex])
            except Exception as exc:  # noqa: BLE001
                unfit.append((ex, f"cannot be spooled: {type(exc).__name__}: {exc}"))
            else:
                fit.append(ex)
        self._quarantine(unfit)
        if fit:
            self._spool(fit)

    def _quarantine(self, records: list[tuple[Exchange, str]]) -> None:
        if not records:
            return
        records = [self._masked(ex, error) for ex, error in records]
        try:
            self.spool.quarantine(records)
        except Exception as exc:  # noqa: BLE001 - the disk refuses even this: count the loss
            self._drop([ex for ex, _ in records], f"quarantine write failed: {exc}")
            return
        self.stats.quarantined += len(records)

    def _masked(self, ex: Exchange, error: str) -> tuple[Exchange, str]:
        """A record masked before it goes to disk, whichever step it failed at (masking is idempotent).

        One that cannot even be masked keeps only its identity and the error: a secret never reaches the disk.
        """
        try:
            self.redactor.exchange(ex)
            return ex, self.redactor.text(error) or ""
        except Exception as exc:  # noqa: BLE001 - whatever broke the record may break its masking too
            bare = Exchange(method=ex.method, path="", status=ex.status)
            bare.id, bare.started_at = ex.id, ex.started_at
            return bare, f"{type(exc).__name__} while masking; the record's fields were left out"

    def _drop(self, batch: list[Exchange], why: str) -> None:
        self.stats.dropped += len(batch)
        log.error("%s: %d records dropped (total dropped %d)", why, len(batch), self.stats.dropped)


def _records_fault(exc: BaseException) -> bool:
    """Whether a failed insert may be the records' fault (retry them alone), not the database's (an outage).

    The database's: it cannot be reached, timed out, is locked, read-only, or its tables are gone
    (``OperationalError``, ``ProgrammingError``, ``InterfaceError``... and OS errors). The records':
    values it refuses (a ``DataError`` or ``IntegrityError`` anywhere in the chain of causes: asyncpg
    refuses an out-of-range parameter itself, wrapped in a plain ``DBAPIError``), and any error raised
    before a statement reached the database (encoding a value, binding a parameter).
    """
    if isinstance(exc, sa_exc.DBAPIError):
        return any(type(e).__name__ in _REFUSED_VALUES for e in _causes(exc))
    if isinstance(exc, sqlite3.Error):  # SQLite's batches go to the driver directly (``store.writes``)
        # A ProgrammingError is a value it cannot bind, or a closed connection: only the first is the records'.
        if isinstance(exc, sqlite3.ProgrammingError):
            return "binding" in str(exc)
        return isinstance(exc, (sqlite3.DataError, sqlite3.IntegrityError))
    return not isinstance(exc, OSError)


_REFUSED_VALUES = frozenset({"DataError", "IntegrityError"})


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = getattr(current, "orig", None) or current.__cause__
    return chain
