"""``proxy serve --workers N``: N worker processes on one port, and the supervisor that keeps them.

Invariants:
- Workers bind the port with SO_REUSEPORT, so the kernel spreads connections over them; ``serve`` has
  checked the port is free first, so no other process's socket joins theirs.
- Each worker holds the read end of a pipe whose write end only the supervisor has: EOF on it means the
  supervisor is gone (however it ended, SIGKILL included), and the worker stops as on SIGTERM.
- Workers start with SIGINT ignored and in their own process group: a terminal's Ctrl-C reaches the
  supervisor alone, which stops every worker with SIGTERM (drained, recorded), once.
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
    threading.Thread(target=_watch_supervisor, args=(lifeline,), name="proxy-lifeline", daemon=True).start()
    serve(settings)


def supervise(settings: Settings, serve: Serve) -> int:
    """Start ``settings.workers`` workers running ``serve``; restart one that dies; stop all on a signal."""
    ctx = multiprocessing.get_context("spawn")
    lifeline, keep = ctx.Pipe(duplex=False)  # `keep` is never written: it only has to stay open
    stopping = False
    started: dict[int, float] = {}

    def start() -> BaseProcess:
        proc = ctx.Process(target=_worker, args=(settings, lifeline, serve), name="proxy-worker", daemon=False)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited through exec until run_app starts
        try:
            proc.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        started[proc.sentinel] = time.monotonic()
        return proc

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for proc in workers:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    workers = [start() for _ in range(settings.workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
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
            workers.append(start())
    keep.close()
    return 1 if failed else 0
