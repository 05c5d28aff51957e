"""``proxy serve --workers N``: N worker processes on one port, and the supervisor that keeps them.

Invariants:
- Workers bind the port with SO_REUSEPORT, so the kernel spreads connections over them; ``serve`` has
  checked the port is free first, so no other process's socket joins theirs.
- Each worker holds the read end of a pipe whose write end only the supervisor has: EOF on it means the
  supervisor is gone (however it ended, SIGKILL included), and the worker stops as on SIGTERM.
- Workers start with SIGINT blocked and move to their own process group first thing: a terminal's Ctrl-C
  reaches the supervisor alone, which stops every worker with SIGTERM (drained, recorded), once. The
  supervisor blocks SIGINT only while it starts a worker (the worker inherits the block through exec),
  so a Ctrl-C meanwhile is delivered to it right after, never lost; one during start-up stops the
  workers already started and starts no more.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from proxy.config import Settings

log = logging.getLogger("proxy")
# A worker that dies sooner than this after its start is not restarted again (a crash loop).
MIN_WORKER_LIFETIME = 5.0

Serve = Callable[[Settings], None]


def _watch_supervisor(lifeline: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    log.warning("supervisor gone: worker %d stopping", os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)


def _worker(settings: Settings, lifeline: Connection, serve: Serve) -> None:
    os.setpgid(0, 0)  # out of the terminal's foreground group: Ctrl-C goes to the supervisor only
    # A Ctrl-C that came while this process was still in that group is the supervisor's: ignoring SIGINT
    # discards it, then the block inherited from the supervisor can go (``serve`` installs its handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_watch_supervisor, args=(lifeline,), name="proxy-lifeline", daemon=True).start()
    serve(settings)


def supervise(settings: Settings, serve: Serve) -> int:
    """Start ``settings.workers`` workers running ``serve``; restart one that dies; stop all on a signal."""
    ctx = multiprocessing.get_context("spawn")
    lifeline, keep = ctx.Pipe(duplex=False)  # `keep` is never written: it only has to stay open
    stopping = False
    started: dict[int, float] = {}

    workers: list[BaseProcess] = []

    def start() -> None:
        proc = ctx.Process(target=_worker, args=(settings, lifeline, serve), name="proxy-worker", daemon=False)
        # Blocked, not ignored (an ignored Ctrl-C would be lost); it reaches ``stop`` once the block ends.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        started[proc.sentinel] = time.monotonic()
        workers.append(proc)
        if stopping:  # the Ctrl-C came while it started
            _terminate(proc)

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for proc in workers:
            _terminate(proc)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Started now, not by the first worker's start: starting it unblocks SIGINT (and SIGTERM) in passing.
    resource_tracker.ensure_running()
    for _ in range(settings.workers):
        if not stopping:
            start()
    failed = False
    while workers:
        ready = wait([p.sentinel for p in workers])
        for sentinel in ready:
            proc = next(p for p in workers if p.sentinel == sentinel)
            workers.remove(proc)
            proc.join()
            if stopping:
                continue
            lifetime = time.monotonic() - started.pop(sentinel, 0.0)
            if lifetime < MIN_WORKER_LIFETIME:
                log.error("worker %s exited with %s after %.1f s; not restarting it", proc.pid, proc.exitcode, lifetime)
                failed = True
                continue
            log.error("worker %s exited with %s; starting a new one", proc.pid, proc.exitcode)
            start()
    keep.close()
    return 1 if failed else 0


def _terminate(proc: BaseProcess) -> None:
    if proc.is_alive() and proc.pid is not None:
        os.kill(proc.pid, signal.SIGTERM)
