"""The recorder: what the serving loop sees of recording; the work runs in a writer process or thread.

Failure policy (fail open for traffic, closed for data):
- ``submit`` never blocks and never raises: the request path does not wait on the database, ever. It
  appends to the intake (``record.intake``: a deque under a lock) and wakes the writer only if it sleeps.
- Where the writer runs is ``writer`` (``config.WriterMode``). ``PROCESS`` (what ``proxy serve`` uses):
  ``submit`` pickles the record into a frame, the intake holds the frame and the writer process gets
  it (``record.process``, ``record.child``); that process runs this same recorder in ``LOOP`` mode,
  so everything below holds there. A writer process that cannot start leaves the recorder writing
  from a thread (logged). ``THREAD``: a writer thread runs its own event loop (uvloop when installed)
  with its own engine (``store.db.sibling_engine``: same database, its own connections) and does all
  the rest there:
  batching, decoding (``decode.finalize``), pricing, masking, inserting, spooling and writing the spool
  back (``record.writer``). So recording never sits behind request handlers in one loop's queue, and
  no recording step, disk I/O included, runs on the serving loop. An in-memory SQLite database has no
  sibling engine (another pool would see another, empty, database): its writer runs on the serving loop,
  as a task, with the same code (tests only; no real deployment records to memory).
- Batches form by themselves (``batch_size``, ``batch_delay``: ``record.writer``); what ``kill -9`` can
  lose is what ended within ``batch_delay`` (or, with the writer busy, the write in progress) plus one
  batch's write. Starting the thread lowers the interpreter's GIL switch interval to 1 ms (from 5):
  each of the writer's database round trips may otherwise wait 5 ms for the serving thread to let go.
- The queue is bounded by count (``queue_size``) and by bytes (``queue_max_bytes``, an estimate of what
  its records hold: bodies, the tap's kept bytes, headers). Past either bound a record is not dropped:
  the spooler thread (``record.overflow``) prepares, masks and spools it at once, and the writer writes
  it back when it has nothing queued (``stats.overflowed`` counts them).
- When a write fails (database down, locked, read-only, ...) the batch is appended to a spool on local
  disk and the database is marked down: the outage is logged once, later batches go straight to the
  spool, and the database is probed every ``retry_interval`` seconds, with or without traffic. When it
  answers again the spool is written back in order (inserts are idempotent) and normal writing resumes.
- Every value is made storable first (``record.storable``: bytes that are not UTF-8, and NUL, become
  ``\\xNN``), so no client input can make a batch fail. Should a record still fail (a step raises on
  it, or the database refuses its values: a token count past 64 bits, say), it is retried alone, so it
  never takes its batch with it, and then quarantined: written, masked, to ``quarantine-*.jsonl`` in the
  spool folder and counted in ``stats.quarantined``; it is never retried by itself. What the database
  refuses for every record (connection lost, timeout, locked, read-only, table gone) is an outage.
- Records are dropped only when the spool is over ``spool_max_bytes`` or the disk refuses the write;
  each drop is counted in ``stats.dropped`` and logged. A write that fails leaves no partial file.
- ``on_written`` runs on the writer thread after a batch committed, with the records the database did
  not hold yet (``usage.metrics`` is thread-safe for it: prometheus_client locks, and only the writer
  touches the rest); if it raises, that is logged and nothing else changes (the batch is neither spooled
  again nor counted twice). ``stats.written`` counts those same records: it equals the rows this
  recorder added, whatever was written back twice or stopped mid-write (``record.writer``).
- Supervisors: the writer's task is restarted should it die (``stats.writer_restarts``); should the
  thread itself die, the batch it held goes to the spooler and the front starts a new thread
  (``stats.thread_restarts``). Health shows both.
- ``flush()`` waits until everything submitted before it is written, spooled, quarantined or dropped;
  ``close()`` does that, tries the spool once more, then stops the thread and disposes its engine.
  Nothing submitted before ``close()`` is lost unless the process is killed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.config import WriterMode
from proxy.record.channel import record_frame
from proxy.record.exchange import Exchange
from proxy.record.intake import RECORD_OVERHEAD, Intake, size_of
from proxy.record.overflow import Overflow, Shelf
from proxy.record.process import CLOSE_TIMEOUT, WriterProcess
from proxy.record.redact import Redactor
from proxy.record.spool import Spool
from proxy.record.stats import RecorderStats
from proxy.record.writer import RESTART_DELAY, Prep, Writer
from proxy.replay.matchkey import DEFAULT_RULES, KeyRules
from proxy.store.db import engine_recipe, sibling_engine
from proxy.usage.pricing import PriceTable

__all__ = ["Recorder", "RecorderStats"]

log = logging.getLogger("proxy.record.recorder")

QUEUE_MAX_BYTES = 256 << 20
SWITCH_INTERVAL = 0.001  # seconds; see _start_writer


class Recorder:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        queue_size: int = 10_000,
        queue_max_bytes: int = QUEUE_MAX_BYTES,
        batch_size: int = 500,
        spool_dir: str | os.PathLike[str] = "proxy-spool",
        spool_max_bytes: int = 1 << 30,
        retry_interval: float = 2.0,
        batch_delay: float = 0.0,
        on_written: Callable[[list[Exchange]], None] | None = None,
        redactor: Redactor | None = None,
        key_rules: KeyRules = DEFAULT_RULES,
        pricing: PriceTable | None = None,
        writer: WriterMode = WriterMode.THREAD,
    ) -> None:
        self.engine = engine
        self.writer_mode = writer
        self.batch_size = batch_size
        self.batch_delay = batch_delay
        self.retry_interval = retry_interval
        self.on_written = on_written
        self.redactor = redactor if redactor is not None else Redactor()
        self.stats = RecorderStats()
        self.spool = Spool(spool_dir, spool_max_bytes)
        self.intake = Intake(queue_size, queue_max_bytes)
        self.prep = Prep(self.redactor, key_rules, pricing)
        self.shelf = Shelf(self.spool, self.redactor, self.stats)
        self.overflow = Overflow(self.shelf, self.prep, self.intake.done, self.spooled)
        self.writer: Writer | None = None
        self.process: WriterProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended: concurrent.futures.Future[None] | None = None  # the writer's home has ended
        self._stop_home: Callable[[], None] | None = None
        self._stopping = False
        self._restart_delay = RESTART_DELAY

    @property
    def spool_dir(self) -> Path:
        return self.spool.folder

    @property
    def queue_depth(self) -> int:
        return self.intake.depth

    @property
    def threaded(self) -> bool:
        """The writer runs in a thread of its own."""
        return self.writer is not None and self.writer.engine is not self.engine

    @property
    def mode(self) -> WriterMode:
        """Where the writer runs now (``writer`` asked for it; an in-memory database writes on the loop)."""
        if self.process is not None:
            return WriterMode.PROCESS
        return WriterMode.THREAD if self.threaded else WriterMode.LOOP

    def lag_ms(self) -> dict[str, float | None]:
        return self.intake.lag_ms()

    def submit(self, ex: Exchange) -> None:
        try:
            size = size_of(ex)
        except Exception:  # noqa: BLE001 - never on the request path; a record is sized roughly then
            size = RECORD_OVERHEAD
        try:
            process = self.process
            if process is None:
                if self.intake.put(ex, size):
                    return
            elif self._hand(process, ex, size):
                return
            self.stats.overflowed += 1
            self.overflow.put(ex)
        except Exception:  # submit never raises; the loss is counted
            self.stats.dropped += 1
            log.exception("recorder: exchange %s could not be queued; dropped", ex.id)

    def _hand(self, process: WriterProcess, ex: Exchange, size: int) -> bool:
        """To the writer process; False when the intake is full (or the record cannot be pickled)."""
        try:
            frame = record_frame(ex)
        except Exception:  # never expected; the spooler prepares it here instead
            log.exception("recorder: exchange %s could not be handed to the writer process; spooled", ex.id)
            self.intake.counted()
            self.overflow.put(ex)
            return True
        if not self.intake.put(frame, size):
            return False
        process.send(frame)
        # The frame carries the tap now. An exchange and its tap refer to each other: let go here, so the
        # pair is freed when the request ends rather than by the next full collection, hundreds of
        # streams later (it held 40-60 MB at 500 streams).
        ex.body_tap = None
        return True

    def fall_back(self) -> None:
        """The writer process cannot be started again: what it held goes to the spooler, a thread writes."""
        process, self.process = self.process, None
        if process is not None:
            process.spool_held()
        self._start_writer()

    def spooled(self) -> None:
        """The spooler wrote a file: the writer writes it back when nothing is queued."""
        if self.process is not None:  # from the spooler's thread: the channel is the serving loop's
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.process.tell, "spool")
            return
        writer = self.writer
        if writer is not None:
            writer.spool_waiting = True
            self.intake.nudge()

    async def start(self) -> None:
        if self.spool_files():
            # Leftovers from an earlier run: try them first, as if recovering from an outage.
            self.stats.database_ok = False
        self._loop = asyncio.get_running_loop()
        if self.writer_mode is WriterMode.PROCESS and (recipe := engine_recipe(self.engine)) is not None:
            process = WriterProcess(self, recipe)
            if await process.start():
                self.process = process
                self._ended = concurrent.futures.Future()
                return
        await asyncio.wrap_future(self._start_writer())

    def _start_writer(self) -> concurrent.futures.Future[None]:
        """Start the writer's home; the future is set once its loop runs it."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._ended = concurrent.futures.Future()
        engine = None if self.writer_mode is WriterMode.LOOP else sibling_engine(self.engine)
        if engine is None:
            assert self._loop is not None
            task = self._loop.create_task(self._home(self.engine, ready), name="proxy-recorder-home")
            task.add_done_callback(lambda t: self._home_ended(None if t.cancelled() else t.exception()))
        else:
            thread = threading.Thread(
                target=self._thread_main, args=(engine, ready), name="proxy-recorder-writer", daemon=True
            )
            # The GIL passes between the serving thread and the writer every switch interval; at 5 ms
            # (CPython's default) each of the writer's database round trips can wait that long for it.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
            thread.start()
        return ready

    def _thread_main(self, engine: AsyncEngine, ready: concurrent.futures.Future[None]) -> None:
        loop = new_loop()
        died: BaseException | None = None
        try:
            loop.run_until_complete(self._home(engine, ready))
        except BaseException as exc:  # noqa: BLE001 - the front restarts the thread
            died = exc
        finally:
            with contextlib.suppress(BaseException):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        self._home_ended(died)

    async def _home(self, engine: AsyncEngine, ready: concurrent.futures.Future[None]) -> None:
        """The writer's life on its loop: run it until stopped, then try the spool once more; dies with it."""
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        self._stop_home = lambda: loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
        self.writer = writer = Writer(
            engine, self.intake, self.shelf, self.prep, batch_size=self.batch_size,
            batch_delay=self.batch_delay, retry_interval=self.retry_interval, on_written=self.on_written,
        )  # fmt: skip
        writer.closing = self._stopping
        writer.spool_waiting = bool(self.stats.spooled > self.stats.unspooled)
        task = asyncio.create_task(writer.supervise(), name="proxy-recorder")
        ready.set_result(None)
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # what killed the writer kills its home: the front starts another
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not self.stats.database_ok or writer.spool_waiting or self.spool.files():
                await writer.try_recover(force=True)  # (a write-back the stop cancelled, too)
        finally:
            if engine is not self.engine:
                with contextlib.suppress(Exception):
                    await engine.dispose()

    def _home_ended(self, died: BaseException | None) -> None:
        """Any thread: the writer's home ended; unless it was stopped, rescue its batch and start another."""
        ended = self._ended
        if died is not None and not self._stopping:
            writer = self.writer
            lost = writer.in_flight if writer is not None else []
            log.error("recorder: the writer thread died (%s: %s); restarting it", type(died).__name__, died)
            for ex in lost:  # already counted as submitted; the spooler counts them done
                self.overflow.put(ex)
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._restart)
        if ended is not None and not ended.done():
            ended.set_result(None)

    def _restart(self) -> None:
        self.stats.thread_restarts += 1
        assert self._loop is not None
        delay, self._restart_delay = self._restart_delay, min(self._restart_delay * 2, max(self.retry_interval, 0.05))
        self._loop.call_later(delay, lambda: None if self._stopping else self._start_writer())

    async def flush(self) -> None:
        """Wait until everything submitted so far has been written, spooled, quarantined or dropped."""
        intake = self.intake
        done = intake.wait_for(intake.submitted)
        if done is None:
            return
        intake.hurry += 1
        if self.process is not None:
            self.process.tell("hurry", 1)
        try:
            intake.nudge()
            await done
        finally:
            intake.hurry -= 1
            if self.process is not None:
                self.process.tell("hurry", -1)

    async def close(self) -> None:
        """Drain the queue, write or spool everything, stop the writer thread and dispose its engine."""
        if self._ended is None or self._stopping:
            return
        self.intake.hurry += 1  # no more waiting for batches to fill
        if self.writer is not None:
            self.writer.closing = True
        if self.process is not None:
            # Bounded: a child that hangs must not hold the shutdown; what it holds is spooled instead.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), CLOSE_TIMEOUT)
        else:
            await self.flush()
        self._stopping = True
        if self.process is not None:
            await self.process.close()
            self._ended.set_result(None)
        if self.writer is not None:
            self.writer.closing = True
        while not self._ended.done():  # a home that died just now is not restarted any more
            if self._stop_home is not None:
                self._stop_home()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._ended)), 1.0)
        await asyncio.to_thread(self.overflow.close)

    def spool_files(self) -> list[Path]:
        return self.spool.files()

    def spool_bytes(self) -> int:
        return self.spool.size()


def new_loop() -> asyncio.AbstractEventLoop:
    """The writer thread's loop: uvloop when installed, as ``proxy serve`` runs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
