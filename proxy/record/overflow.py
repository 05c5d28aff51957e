"""The recorder's disk side: spooling, quarantine and drops (``Shelf``), and the spooler thread (``Overflow``).

Invariants:
- Everything here is blocking file I/O and runs on the writer's thread or the spooler's, never on the
  loop that serves requests. ``Shelf`` is shared by both threads: its counters change under a lock.
- A record reaches the disk only masked: ``Prep.steps`` ran to its end (the spool), or the record was
  masked again on its way to quarantine; one that cannot be masked keeps only its identity and the error.
- ``Overflow`` takes the records the intake refused (past ``queue_size`` or ``queue_max_bytes``), prepares
  them and spools them at once, so memory stays bounded whatever the writer is doing (a slow database
  holds the writer, not the spooler). It says so through ``on_spooled``, and the writer writes the spool
  back when it has nothing queued.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from typing import Protocol

from proxy.record.exchange import Exchange
from proxy.record.redact import Redactor
from proxy.record.slices import run_through
from proxy.record.spool import Spool, SpoolFull
from proxy.record.stats import RecorderStats

log = logging.getLogger("proxy.record.recorder")


class Steps(Protocol):
    """``record.writer.Prep`` (which imports this module)."""

    def ready(self, batch: list[Exchange], shelf: Shelf) -> Generator[None, None, list[Exchange]]: ...


class Shelf:
    def __init__(self, spool: Spool, redactor: Redactor, stats: RecorderStats) -> None:
        self.spool = spool
        self.redactor = redactor
        self.stats = stats
        self.lock = threading.Lock()

    def put(self, batch: list[Exchange]) -> None:
        """Spool prepared records; those the spool cannot hold are quarantined or dropped, and counted."""
        try:
            data = self.spool.encode(batch)
        except Exception:  # noqa: BLE001 - a value msgpack cannot hold (an int past 64 bits): split it out
            self._apart(batch)
            return
        try:
            self.spool.write(data)
        except SpoolFull as exc:
            self.drop(batch, str(exc))
            return
        except OSError as exc:
            self.drop(batch, f"spool write failed: {exc}")
            return
        with self.lock:
            self.stats.spooled += len(batch)

    def _apart(self, batch: list[Exchange]) -> None:
        fit, unfit = [], []
        for ex in batch:
            try:
                self.spool.encode([ex])
            except Exception as exc:  # noqa: BLE001
                unfit.append((ex, f"cannot be spooled: {type(exc).__name__}: {exc}"))
            else:
                fit.append(ex)
        self.quarantine(unfit)
        if fit:
            self.put(fit)

    def quarantine(self, records: list[tuple[Exchange, str]]) -> None:
        if not records:
            return
        records = [self._masked(ex, error) for ex, error in records]
        try:
            self.spool.quarantine(records)
        except Exception as exc:  # noqa: BLE001 - the disk refuses even this: count the loss
            self.drop([ex for ex, _ in records], f"quarantine write failed: {exc}")
            return
        with self.lock:
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

    def drop(self, batch: list[Exchange], why: str) -> None:
        with self.lock:
            self.stats.dropped += len(batch)
            total = self.stats.dropped
        log.error("%s: %d records dropped (total dropped %d)", why, len(batch), total)


class Overflow:
    """A thread that prepares and spools the records the intake had no room for."""

    def __init__(self, shelf: Shelf, prep: Steps, done: Callable[[int], None], on_spooled: Callable[[], None]) -> None:
        self.shelf = shelf
        self.prep = prep
        self.done = done
        self.on_spooled = on_spooled
        self._cond = threading.Condition()
        self._items: list[Exchange] = []
        self._closing = False
        self._thread: threading.Thread | None = None

    def put(self, ex: Exchange) -> None:
        with self._cond:
            self._items.append(ex)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._main, name="proxy-recorder-spooler", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Spool what is waiting and stop the thread (blocking: call it from a thread of its own)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _main(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                batch, self._items = self._items, []
                if not batch:
                    return
            try:
                self._spool(batch)
            except Exception:  # the spooler must outlive any record; the batch is counted as lost
                log.exception("recorder: the spooler failed on %d records", len(batch))
                self.shelf.drop(batch, "spooler failure")
            finally:
                self.done(len(batch))

    def _spool(self, batch: list[Exchange]) -> None:
        ready = run_through(self.prep.ready(batch, self.shelf))
        if ready:
            self.shelf.put(ready)
            self.on_spooled()
