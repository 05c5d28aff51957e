"""The recorder's counters, shared by its front, its writer thread and its spooler (read by health and metrics).

Invariant: each counter has one writer at a time (the writer thread, or ``overflow.Shelf`` under its lock,
or the front on the serving loop for ``overflowed`` and ``thread_restarts``); readers see whole ints.
"""

from __future__ import annotations

import msgspec


class RecorderStats(msgspec.Struct):
    # Rows the database added (a record written again, from a spool file written back twice, counts once).
    written: int = 0
    spooled: int = 0
    # Records of spool files written back and removed (stored then, stored before, or quarantined).
    unspooled: int = 0
    dropped: int = 0
    quarantined: int = 0
    # Records the queue had no room for (``queue_size`` or ``queue_max_bytes``), spooled instead.
    overflowed: int = 0
    writer_restarts: int = 0
    thread_restarts: int = 0
    writer_error: str | None = None
    batches: int = 0
    last_batch_ms: float = 0.0
    database_ok: bool = True
    last_error: str | None = None
    down_since: float | None = None
