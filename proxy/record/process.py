"""The writer process, seen from the serving process: start it, feed it, hear back, restart it.

Invariants:
- The child (``python -m proxy.record.child``) runs the same recorder with its writer on its own loop
  (``WriterMode.LOOP``), with its own engine and connections; the serving process only pickles each
  record into a frame (``record.channel``) and writes it to the socket pair. Decoding, pricing,
  masking, inserting and the spool's write-back all run in the child, on its own interpreter lock.
- The serving process keeps every frame it sent in its intake until the child says the records
  finished (written, spooled, quarantined or dropped), in order: the intake's bounds count what the
  child holds, ``flush()`` waits on the same counts as with a writer thread, and a child that dies has
  the frames it had not finished sent again to the next one (inserts are idempotent; ``stats.written``
  counts rows added, so nothing is counted twice).
- The child starts in a session of its own (a Ctrl-C at the terminal goes to the serving process,
  which then closes it in order) and ignores SIGTERM; it stops when told (``close``) or when its end of
  the socket closes: after a ``kill -9`` of the serving process it still writes everything it was
  handed, then exits.
- The child's counters come back with each message and are folded into the front's ``stats`` (its
  additive counters by difference, its state as is); ``on_written`` runs here, on the serving loop,
  with the written records stripped of their bodies and headers.
- A child that cannot start (within ``START_TIMEOUT``) is logged and the recorder writes from a thread
  instead; one that dies later is started again, after ``RESTART_DELAY`` doubling up to
  ``retry_interval``, and counted in ``stats.thread_restarts``. After ``START_FAILURES`` failed starts
  in a row the recorder falls back to a thread for good (the held records go to the spooler). Should
  children die ``POISON_DEATHS`` times in a row without finishing anything, the oldest held record (the
  one they die on) is dropped, counted and logged, rather than kill every child to come.
- Only the current child's channel counts: one let go (killed after a failed start) is ignored when it
  closes, so no second respawn loop, and no second child, can begin.
- ``close`` stops handing records over, tells the child to finish and waits until it closed its end
  (at most ``CLOSE_TIMEOUT``; then it is killed); whatever is still held then is spooled here, so a
  record is never lost for a child that hung or died at the end (inserts are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import proxy
from proxy.record.channel import Channel, Kind, control_frame, read_frame, read_written, unpickle
from proxy.record.exchange import Exchange
from proxy.record.redact import LogScrubber
from proxy.record.stats import RecorderStats
from proxy.record.writer import RESTART_DELAY

if TYPE_CHECKING:
    from proxy.record.recorder import Recorder

log = logging.getLogger("proxy.record.recorder")

START_TIMEOUT = 30.0
START_FAILURES = 3
POISON_DEATHS = 3
CLOSE_TIMEOUT = 60.0  # seconds for the child to finish what it holds at shutdown
EXIT_GRACE = 5.0  # seconds for a child that closed its end to exit before it is killed
# Counters the child adds to (folded into the front's by difference); the rest of its stats is state.
ADDED = ("written", "spooled", "unspooled", "dropped", "quarantined", "overflowed", "writer_restarts", "batches")
STATE = ("writer_error", "last_batch_ms", "database_ok", "last_error", "down_since")


class WriterProcess:
    def __init__(self, front: Recorder, recipe: tuple[str, dict[str, Any]]) -> None:
        self.front = front
        self.recipe = recipe
        self.channel: Channel | None = None
        self.live = False  # the child is ready and has every held frame: new frames go straight to it
        self.stopping = False
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[None] | None = None
        self._seen = RecorderStats()
        self._respawn: asyncio.Task[None] | None = None
        self._delay = RESTART_DELAY
        self._lost = asyncio.Event()  # the current child's channel closed
        self._deaths = 0  # children that died in a row without finishing a record
        self._exit: int | None = None  # the exit status of the last child let go

    @property
    def returncode(self) -> int | None:
        """The last child's exit status once it exited (None while it runs)."""
        return self._proc.returncode if self._proc is not None else self._exit

    # --- the serving loop's side of submit ---
    def send(self, frame: bytes) -> None:
        """A frame the intake now holds; sent at once to a live child, else when the next one is ready."""
        if self.live and self.channel is not None:
            self.channel.write(frame)

    def tell(self, *message: Any) -> None:
        if self.live and self.channel is not None:
            self.channel.write(control_frame(*message))

    # --- life ---
    async def start(self) -> bool:
        """Start the child; False (logged) when it cannot be, and the caller writes from a thread."""
        try:
            await asyncio.wait_for(self._spawn(), START_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any reason at all: recording goes on in a thread
            why = f"{type(exc).__name__}: {exc}"
            log.error("recorder: the writer process did not start (%s); writing from a thread", why)
            await self._kill()
            return False
        return True

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy.record.child", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True, env=_child_env(),
            )  # fmt: skip
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self._seen = RecorderStats()  # a new child counts from zero
        self._ready = ready = loop.create_future()
        self._lost = asyncio.Event()
        channel: Channel = Channel(self._on_frame, lambda: self._on_lost(channel))
        self.channel = channel
        await loop.create_unix_connection(lambda: channel, sock=mine)
        channel.write(control_frame("config", self._config()))
        await ready
        # In one step of the loop: nothing submitted meanwhile can come between these and the next.
        for frame in self.front.intake.held():
            channel.write(frame)
        if self.front.intake.hurry:  # a flush waiting since before this child
            channel.write(control_frame("hurry", self.front.intake.hurry))
        self.live = True
        self._delay = RESTART_DELAY

    def _config(self) -> dict[str, Any]:
        front = self.front
        return {
            "recipe": self.recipe,
            # The child's queue never overflows: what it holds is bounded by the front's intake.
            "queue_size": front.intake.max_items * 2 + 1,
            "queue_max_bytes": front.intake.max_bytes * 2 + 1,
            "batch_size": front.batch_size,
            "batch_delay": front.batch_delay,
            "retry_interval": front.retry_interval,
            "spool_dir": str(front.spool.folder.resolve()),
            "spool_max_bytes": front.spool.max_bytes,
            "redactor": front.redactor,
            "key_rules": front.prep.key_rules,
            "pricing": front.prep.pricing,
            "hear_written": front.on_written is not None,
            # The child logs at the levels set here; its records come back to be logged here (``_log``).
            "log_levels": _levels(),
            # For what the child must log itself (the serving process gone): scrubbed the same way.
            "log_filters": [f for h in logging.getLogger().handlers for f in h.filters if isinstance(f, LogScrubber)],
        }

    def _on_frame(self, kind: Kind, payload: bytes) -> None:
        if kind is Kind.WRITTEN:
            records, stats = read_written(payload)
            self._absorb(stats)
            self._hand_written(records)
            return
        if kind is not Kind.CONTROL:
            return
        message = unpickle(payload)
        what = message[0]
        if what == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif what == "done":
            _, n, lags, stats = message
            self._absorb(stats)
            self._deaths = 0
            self.front.intake.release(n, lags)
        elif what == "stats":
            self._absorb(message[1])
        elif what == "log":
            _log(message[1])

    def _hand_written(self, records: list[Exchange]) -> None:
        hook = self.front.on_written
        if hook is None:
            return
        try:
            hook(records)
        except Exception:
            log.exception("recorder: on_written hook failed after a batch of %d was stored", len(records))

    def _absorb(self, child: RecorderStats) -> None:
        """Fold the child's counters into the front's (the spooler thread adds to some of them: its lock)."""
        stats, seen = self.front.stats, self._seen
        with self.front.shelf.lock:
            for name in ADDED:
                setattr(stats, name, getattr(stats, name) + getattr(child, name) - getattr(seen, name))
            for name in STATE:
                setattr(stats, name, getattr(child, name))
        self._seen = child

    def _on_lost(self, channel: Channel) -> None:
        if channel is not self.channel:
            return  # a child already let go (``_kill``): its end closing changes nothing
        was_live, self.live, self.channel = self.live, False, None
        self._lost.set()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError(f"the writer process (pid {self.pid}) exited while starting"))
            return
        if self.stopping or not was_live:
            return
        self.front.stats.thread_restarts += 1
        log.error("recorder: the writer process (pid %s) exited; starting another", self.pid)
        self._deaths += 1
        if self._deaths >= POISON_DEATHS:
            self._deaths = 0
            self._drop_oldest()
        self._respawn = asyncio.get_running_loop().create_task(self._again(), name="proxy-recorder-respawn")

    def _drop_oldest(self) -> None:
        intake = self.front.intake
        for frame in intake.take(1):
            try:
                what = read_frame(frame).id
            except Exception:  # noqa: BLE001 - it is dropped either way
                what = "(unreadable)"
            with self.front.shelf.lock:
                self.front.stats.dropped += 1
            log.error("recorder: %d writer processes in a row died holding exchange %s; dropped", POISON_DEATHS, what)
            intake.done(1)

    async def _again(self) -> None:
        await self._kill()
        for _ in range(START_FAILURES):
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, max(self.front.retry_interval, RESTART_DELAY))
            if self.stopping:
                return
            try:
                await asyncio.wait_for(self._spawn(), START_TIMEOUT)
                return
            except Exception as exc:  # noqa: BLE001 - tried again after the delay
                log.error("recorder: the writer process did not start again (%s: %s)", type(exc).__name__, exc)
                await self._kill()
        log.error("recorder: the writer process failed to start %d times; writing from a thread", START_FAILURES)
        self.front.fall_back()

    async def close(self) -> None:
        """Tell the child to finish and wait for it; what it could not finish goes to the spooler."""
        self.stopping = True
        if self._respawn is not None and not self._respawn.done():
            self._respawn.cancel()
            with contextlib.suppress(BaseException):
                await self._respawn
        channel = self.channel
        if channel is not None and self.live:
            self.live = False  # what is submitted from now on stays held, and is spooled below
            channel.write(control_frame("close"))
            try:
                await asyncio.wait_for(self._lost.wait(), CLOSE_TIMEOUT)
            except TimeoutError:
                log.error("recorder: the writer process did not finish in %.0f s; its records spooled", CLOSE_TIMEOUT)
        await self._kill(grace=EXIT_GRACE)
        self.spool_held()

    def spool_held(self) -> None:
        """Everything still held goes to the spooler (the next start writes it back; inserts are idempotent)."""
        intake = self.front.intake
        for frame in intake.take(intake.depth):
            try:
                ex = read_frame(frame)
            except Exception:  # our own frame; never expected
                with self.front.shelf.lock:
                    self.front.stats.dropped += 1
                log.exception("recorder: a held record could not be read back; dropped")
                intake.done(1)
                continue
            self.front.overflow.put(ex)  # the spooler counts it done

    async def _kill(self, grace: float = 0.0) -> None:
        """Let the current child go: its channel closed, the process reaped (killed after ``grace`` s)."""
        proc, self._proc = self._proc, None
        channel, self.channel = self.channel, None
        self.live = False
        if channel is not None:
            channel.close()
        if proc is None:
            return
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
        with contextlib.suppress(ProcessLookupError):
            if proc.returncode is None:
                proc.kill()
        with contextlib.suppress(Exception):
            await proc.wait()
        self._exit = proc.returncode


def _levels() -> dict[str, int]:
    """The levels of the loggers that have one set here ("" is the root)."""
    levels = {"": logging.getLogger().getEffectiveLevel()}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


def _log(fields: dict[str, Any]) -> None:
    """A record the writer process logged, logged here as if here (so it meets this process's handlers)."""
    logger = logging.getLogger(fields["name"])
    if logger.isEnabledFor(fields["levelno"]):
        logger.handle(logging.makeLogRecord(fields))


def _child_env() -> dict[str, str]:
    """The serving process's environment, with this package importable whatever the working directory."""
    env = dict(os.environ)
    root = str(Path(proxy.__file__).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in paths if p != root]])
    return env
