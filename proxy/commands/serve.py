"""``proxy serve``: migrate, then run the proxy until SIGINT/SIGTERM (which drains the recorder).

With ``--workers N`` (N > 1) the parent migrates the database and makes sure the fingerprint secret
exists (so workers never race to create it), then starts N worker processes that each bind the same
port with SO_REUSEPORT; the kernel spreads connections over them. The parent only supervises: it
restarts a worker that dies, and on SIGINT/SIGTERM passes the signal on and waits for every worker to
drain its recorder.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

from proxy.commands import Subparsers, add_common, open_engine, run, settings_from
from proxy.commands.db import prepare_database
from proxy.config import Exhausted, Mode, Settings, Timing

log = logging.getLogger("proxy")
# A worker that dies sooner than this after its start is not restarted again (a crash loop).
MIN_WORKER_LIFETIME = 5.0
WORKER_STOP_TIMEOUT = 60.0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args, require_upstream=True)
    _configure_logging(settings)
    revision = run(lambda: prepare_database(settings, upgrade=settings.database.auto_migrate))
    host, port = settings.host_port
    log.info(
        "listening on http://%s:%d/v1 -> %s (mode %s, schema %s, %d worker%s)",
        host,
        port,
        settings.upstream.url or "(no upstream: replay only)",
        settings.mode,
        revision,
        settings.workers,
        "" if settings.workers == 1 else "s",
    )
    if settings.workers == 1:
        _serve(settings, reuse_port=False)
        return 0
    run(lambda: _ensure_fingerprint_secret(settings))
    return _supervise(settings)


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _tune_gc(_app: object) -> None:
    """Keep the cyclic garbage collector off the long-lived heap.

    What exists once the app has started (modules, SQLAlchemy metadata, the app) lives as long as the
    process; ``gc.freeze`` moves it out of every later collection, so the full collections that
    request garbage still triggers do not walk it every time. A native py-spy profile of a streaming
    proxy showed ``gc_collect_main`` in about a sixth of its busy samples before this.
    """
    import gc

    gc.collect()
    gc.freeze()


def _serve(settings: Settings, *, reuse_port: bool) -> None:
    from aiohttp import web

    from proxy.forward.app import create_app

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    host, port = settings.host_port
    app = create_app(settings)
    app.on_startup.append(_tune_gc)
    web.run_app(
        app,
        host=host,
        port=port,
        reuse_port=reuse_port or None,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        # Cancel a handler as soon as its client disconnects, so upstream streams stop at once.
        handler_cancellation=True,
        shutdown_timeout=30,
        print=None,
    )


def _worker(settings: Settings) -> None:
    _configure_logging(settings)
    # The parent decides when to stop; a terminal's Ctrl-C reaches every worker too and means the same.
    _serve(settings, reuse_port=True)


async def _ensure_fingerprint_secret(settings: Settings) -> None:
    from proxy.store import db

    async with open_engine(settings) as engine:
        await db.fingerprint_secret(engine, settings.fingerprint_secret)


def _supervise(settings: Settings) -> int:
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        proc = ctx.Process(target=_worker, args=(settings,), name="proxy-worker", daemon=False)
        proc.start()
        started[proc.sentinel] = time.monotonic()
        return proc

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    started: dict[int, float] = {}
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
                if not workers:
                    break
                continue
            log.error("worker %s exited with %s; starting a new one", proc.pid, proc.exitcode)
            workers.append(start())
    return 1 if failed else 0


def register(sub: Subparsers) -> None:
    serve = sub.add_parser("serve", help="run the proxy")
    add_common(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="listen address (default 127.0.0.1:8080)")
    serve.add_argument("--upstream", metavar="URL", help="upstream base URL, e.g. https://api.openai.com/v1")
    serve.add_argument("--mode", choices=[m.value for m in Mode], help="what to do with requests")
    replay = serve.add_argument_group("replay (modes replay and auto)")
    replay.add_argument("--from-session", action="append", metavar="ID", help="answer from this session (repeatable)")
    replay.add_argument("--replay-timing", choices=[t.value for t in Timing], help="stream playback timing")
    replay.add_argument("--replay-speed", type=float, metavar="X", help="playback speed factor (10 = ten times faster)")
    replay.add_argument("--on-exhausted", choices=[e.value for e in Exhausted], help="when recordings run out")
    replay.add_argument("--replay-partial", action="store_true", help="also replay recordings that did not complete")
    serve.add_argument(
        "--workers", type=int, metavar="N", help="worker processes sharing the port (SO_REUSEPORT); default 1"
    )
    serve.set_defaults(func=cmd_serve)
