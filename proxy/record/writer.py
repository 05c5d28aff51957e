"""The writer: takes batches from the intake, prepares them, stores them; runs on the writer thread's own loop.

Invariants:
- One ``Writer`` per engine, on the loop that engine's connections belong to (its own thread's; the
  serving loop only for an in-memory SQLite database, which has no sibling engine). It is the only code
  that inserts records, and the only reader of the spool.
- A batch is whatever is queued, up to ``batch_size``. When the writer was idle it waits until the
  oldest queued record ended ``batch_delay`` ago (cut short when the batch fills, on ``flush()`` and on
  ``close()``); records that already waited that long go at once. So no record waits for a batch to
  fill longer than ``batch_delay``, and after ``kill -9`` what is lost ended within ``batch_delay`` (or
  the write in progress, if longer) plus the write of its own batch, as long as the writer keeps up.
- Preparing (``Prep.steps``: the tap's last decoding, ``finalize``, pricing, the match key,
  ``make_storable``, masking) runs here; a record whose step raises is quarantined alone.
- A failed insert is retried record by record when it may be the records' fault (``_records_fault``),
  so one refused record never takes its batch with it; any other failure is an outage: the batch goes
  to the spool, the database is probed every ``retry_interval`` (with or without traffic) and the
  spool written back in order when it answers. Spool files the spooler wrote (``record.overflow``)
  are written back when nothing is queued, one file at a time, live records first.
- ``on_written`` runs here, after a batch committed; if it raises, that is logged and nothing else
  changes (the batch is stored: it is neither spooled again nor counted twice).
- ``stats.written`` counts the rows the database added, as its inserts report them, and ``on_written``
  gets those records only: a record sent again (a spool file written back after its commit, by a write
  that was stopped before the file went, or by an earlier process killed at that moment) is stored once
  and counted once. A stop (the recorder closing cancels the writer) never falls between a commit and
  its count: an insert in progress is finished and counted first. ``stats.unspooled`` counts the
  records of the spool files that were written back and removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import msgspec
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.record.decode import finalize
from proxy.record.exchange import Exchange
from proxy.record.intake import Intake, ended_at
from proxy.record.overflow import Shelf
from proxy.record.redact import Redactor
from proxy.record.slices import complete
from proxy.record.storable import make_storable
from proxy.replay.matchkey import KeyRules, match_key
from proxy.store.writes import insert_exchanges
from proxy.usage.pricing import PriceTable

log = logging.getLogger("proxy.record.recorder")

# A writer that died is restarted after this long (doubling, up to retry_interval), not in a hot loop.
RESTART_DELAY = 0.05


class Prep:
    """What turns a live Exchange into a storable, masked record, as steps (run by the writer or the spooler)."""

    def __init__(self, redactor: Redactor, key_rules: KeyRules, pricing: PriceTable | None) -> None:
        self.redactor = redactor
        self.key_rules = key_rules
        self.pricing = pricing

    def steps(self, ex: Exchange) -> Generator[None, None, None]:
        if ex.body_tap is not None:
            yield from ex.body_tap.drain_steps()  # what the tee left undecoded
        finalize(ex)
        if self.pricing is not None:
            self.pricing.apply(ex)
        if ex.match_key is None:  # playback (auto mode) already keyed it
            # From the body as the client sent it, so a live request finds it again at replay time.
            ex.match_key = match_key(ex.method, ex.path, ex.request_body, self.key_rules, ex.upstream)
        make_storable(ex)
        # Every field taken from a client or upstream, masked before the database or the spool.
        yield from self.redactor.exchange_steps(ex)

    def ready(self, batch: list[Exchange], shelf: Shelf) -> Generator[None, None, list[Exchange]]:
        """The records of a batch made ready for storage, as steps; one that cannot be is quarantined alone."""
        ready = []
        for ex in batch:
            try:
                yield from self.steps(ex)
            except Exception as exc:  # one record's fault, whatever it is
                log.exception("recorder: exchange %s could not be prepared for storage", ex.id)
                shelf.quarantine([(ex, f"{type(exc).__name__}: {exc}")])
                continue
            ready.append(ex)
            yield
        return ready


class Writer:
    def __init__(
        self,
        engine: AsyncEngine,
        intake: Intake,
        shelf: Shelf,
        prep: Prep,
        *,
        batch_size: int,
        batch_delay: float,
        retry_interval: float,
        on_written: Callable[[list[Exchange]], None] | None,
    ) -> None:
        self.engine = engine
        self.intake = intake
        self.shelf = shelf
        self.spool = shelf.spool
        self.stats = shelf.stats
        self.prep = prep
        self.batch_size = batch_size
        self.batch_delay = batch_delay
        self.retry_interval = retry_interval
        self.on_written = on_written
        self.closing = False
        self.spool_waiting = False  # the spooler wrote files the database has not seen (set from its thread)
        self.in_flight: list[Exchange] = []  # the batch being written, rescued by the front if the thread dies
        self._next_probe = 0.0

    async def supervise(self) -> None:
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

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            self.in_flight = batch
            lags = None
            try:
                lags = await self._write(batch)
            except Exception as exc:
                log.exception("recorder: unexpected failure writing a batch of %d", len(batch))
                self.shelf.quarantine([(ex, f"writer failure: {type(exc).__name__}: {exc}") for ex in batch])
            # Not in a ``finally``: a batch the thread died on stays in ``in_flight`` for the front.
            self.in_flight = []
            self.intake.done(len(batch), lags)

    async def _next_batch(self) -> list[Exchange]:
        """The next batch; meanwhile a database that is down is probed, and the spooler's files written back."""
        intake = self.intake
        while True:
            wait = None
            if not self.stats.database_ok and not self.closing:
                wait = self._next_probe - time.monotonic()
                if wait <= 0:
                    await self.try_recover()
                    continue
            elif self.spool_waiting and not intake.depth:
                self.spool_waiting = False
                await self.try_recover(force=True, live_first=True)
                continue
            if not intake.depth:
                await intake.sleep(1, wait)
                continue
            if await self._gather():
                continue  # woken or timed out: look again (a nudge may have come for the spool)
            batch = intake.take(self.batch_size)
            if batch:
                return batch

    async def _gather(self) -> bool:
        """Let a batch fill until its oldest record ended ``batch_delay`` ago, unless someone waits for it.

        True when it waited (the caller looks again), False when the batch should go now.
        """
        intake = self.intake
        if self.batch_delay <= 0 or self.closing or intake.hurry or intake.depth >= self.batch_size:
            return False
        oldest = intake.oldest_end()
        if oldest is None:
            return False
        left = oldest + self.batch_delay - time.perf_counter()
        if left <= 0:
            return False
        await intake.sleep(self.batch_size, left)
        return True

    async def _write(self, batch: list[Exchange]) -> list[float] | None:
        """Prepare and store a batch; the lags (ms from each exchange's end to its commit) of those stored."""
        ready = await complete(self.prep.ready(batch, self.shelf))
        if not ready:
            return None
        if not self.stats.database_ok and not await self.try_recover():
            self.shelf.put(ready)
            return None
        if not await self._store(ready):
            return None
        now = time.perf_counter()
        return [(now - ended_at(ex)) * 1000 for ex in ready]

    async def _insert(self, batch: list[Exchange]) -> None:
        """Insert a batch and count what the database added: one step, which a stop lets finish."""
        await _to_the_end(self._insert_and_count(batch))

    async def _insert_and_count(self, batch: list[Exchange]) -> None:
        async with self.engine.begin() as conn:
            added = await insert_exchanges(conn, batch)
        self._written(batch, added)

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
                    self.shelf.put(batch)
                return False
            return await self._store_one_by_one(batch, exc, spooled=spooled)
        if not spooled:
            self.stats.last_batch_ms = (time.perf_counter() - started) * 1000
            self.stats.batches += 1
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
                        self.shelf.put(batch[i:])
                    return False
                self._refused(ex, exc)
        return True

    def _refused(self, ex: Exchange, exc: Exception) -> None:
        log.error("database refused exchange %s (%s: %s); quarantined", ex.id, type(exc).__name__, exc)
        self.shelf.quarantine([(ex, f"database refused it: {type(exc).__name__}: {exc}"[:2000])])

    def _written(self, batch: list[Exchange], added: set[str]) -> None:
        """A batch committed: count (and hand ``on_written``) the records the database did not hold yet."""
        stored = batch if len(added) == len(batch) else [ex for ex in batch if ex.id in added]
        self.stats.written += len(stored)
        if self.on_written is None or not stored:
            return
        try:
            self.on_written(stored)
        except Exception:
            log.exception("recorder: on_written hook failed after a batch of %d was stored", len(stored))

    def _mark_down(self, exc: BaseException) -> None:
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.stats.database_ok:
            log.error("database unavailable, spooling records to %s: %s", self.spool.folder, self.stats.last_error)
            self.stats.database_ok = False
            self.stats.down_since = time.time()
        self._next_probe = time.monotonic() + self.retry_interval

    async def try_recover(self, *, force: bool = False, live_first: bool = False) -> bool:
        """Write the spool back if the database answers; True when it is fully written.

        ``live_first``: stop after a file when records are queued (they go first; the rest waits).
        """
        if not force and time.monotonic() < self._next_probe:
            return False
        for path in self.spool.files():
            if live_first and self.intake.depth:
                self.spool_waiting = True
                return False
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
            else:
                self.stats.unspooled += len(batch)
        if not self.stats.database_ok:
            log.warning("database available again; spool written back")
        self.stats.database_ok = True
        self.stats.down_since = None
        self.stats.last_error = None
        return True


async def _to_the_end(coro: Coroutine[Any, Any, None]) -> None:
    """Await ``coro``; if this task is cancelled meanwhile, let ``coro`` finish first, then be cancelled."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved (the stop is what the caller sees), so never logged as lost
        raise


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
