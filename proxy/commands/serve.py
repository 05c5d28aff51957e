"""``proxy serve``: migrate, then run the proxy until SIGINT/SIGTERM (which drains the recorder).

Invariants:
- Nothing says "listening" before the address is known to be free: a port another process serves (another
  proxy included, even one sharing it through SO_REUSEPORT) is one line and exit 2.
- ``--demo`` serves the built-in fake upstream (``proxy.testing.fake_upstream --demo``, a child process that
  exits when this one is gone); the first log line and every response (``X-Demo-Upstream``) say so.
- A stop logs one line: streams drained, records written.

With ``--workers N`` (N > 1) the parent migrates the database and makes sure the fingerprint secret
exists (so workers never race to create it), then supervises N workers (``proxy.commands.workers``).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from proxy.commands import Subparsers, add_common, open_engine, run, settings_from
from proxy.commands.db import prepare_database
from proxy.commands.workers import supervise
from proxy.config import ConfigError, Exhausted, Mode, Settings, Timing, WriterMode
from proxy.config_text import upstream_url_warning

log = logging.getLogger("proxy")
DEMO_START_TIMEOUT = 30.0
QUIET_LIBRARIES = ("sqlalchemy", "aiosqlite", "asyncpg")


def cmd_serve(args: argparse.Namespace) -> int:
    if args.demo and args.upstream:
        raise ConfigError("--demo: serves the built-in demo upstream; give --demo or --upstream, not both")
    settings = settings_from(args, require_upstream=not args.demo)
    _configure_logging(settings)
    check_free(settings.listen, *settings.host_port)
    with demo_upstream() if args.demo else _no_demo() as demo_url:
        if demo_url:
            settings = msgspec.structs.replace(
                settings, upstream=msgspec.structs.replace(settings.upstream, url=demo_url)
            )
            log.info(
                "demo upstream %s: replies echo your last message (no model, no key, no network); "
                "serve a real one with --upstream URL",
                demo_url,
            )
        for name, up in settings.all_upstreams().items():
            warning = upstream_url_warning("upstream.url" if name == "default" else f"upstreams.{name}.url", up.url)
            if warning:
                log.warning(warning)
        revision = run(lambda: prepare_database(settings, upgrade=settings.database.auto_migrate), finish_first=True)
        host, port = settings.host_port
        log.info(
            "listening on http://%s:%d/v1 -> %s (mode %s, schema %s, %d worker%s, database %s)",
            host,
            port,
            settings.upstream.url or "(no upstream: replay only)",
            settings.mode,
            revision,
            settings.workers,
            "" if settings.workers == 1 else "s",
            _redacted(settings.database.url),
        )
        if settings.workers == 1:
            _serve(settings)
            return 0
        run(lambda: _ensure_fingerprint_secret(settings), finish_first=True)
        return supervise(settings, _serve_worker)


def _redacted(url: str) -> str:
    from proxy.store.db import redacted_url

    return redacted_url(url)


def check_free(listen: str, host: str, port: int) -> None:
    """Refuse an address something already serves; bound without SO_REUSEPORT, so a socket that shares
    the port through it (another proxy's workers) counts as taken too."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"listen: cannot resolve {host!r}: {exc.strerror}") from None
    for family, kind, proto, _name, addr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT left by the last run is fine
            try:
                probe.bind(addr)
            except OSError as exc:
                taken = exc.errno == errno.EADDRINUSE
                why = "already in use (another proxy or program serves it)" if taken else exc.strerror
                raise ConfigError(f"listen: cannot listen on {listen}: {why}") from None


@contextmanager
def _no_demo() -> Iterator[None]:
    yield None


@contextmanager
def demo_upstream() -> Iterator[str]:
    """The demo upstream as a child process; its stdin is its lifeline (EOF: this process is gone)."""
    cmd = [sys.executable, "-m", "proxy.testing.fake_upstream", "--demo", "--host", "127.0.0.1"]
    # A Ctrl-C while Popen runs would leave the child running with its pipes closed (it then fails to
    # print its port: a BrokenPipeError traceback on our stderr); held until the child is ours to stop.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        # Its own session: a terminal's Ctrl-C is this process's to handle, not the demo's (even mid-import).
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a Ctrl-C meanwhile is raised here: the child is stopped
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise ConfigError("--demo: the demo upstream did not start (python -m proxy.testing.fake_upstream --demo)")
        yield f"http://127.0.0.1:{int(line)}/v1"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _configure_logging(settings: Settings) -> None:
    """The proxy's log: every record scrubbed of credentials, whichever library wrote it."""
    from proxy.record.redact import LogScrubber, Redactor, configured_secrets

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scrubber = LogScrubber(Redactor.from_settings(settings), configured_secrets(settings))
    for handler in logging.getLogger().handlers:
        handler.addFilter(scrubber)
    # At DEBUG these would echo every statement with its parameters and result rows (recorded traffic,
    # the fingerprint secret): the proxy's log level is not a request for SQL tracing.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


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


async def _stopped(app: object) -> None:
    from proxy.forward.state import STATE

    state = app[STATE]  # type: ignore[index]
    stats = state.recorder.stats
    spooled = f", {stats.spooled - stats.unspooled} waiting in the spool" if stats.spooled > stats.unspooled else ""
    log.info("stopped: streams drained, %d records written%s", stats.written, spooled)


def _serve(settings: Settings) -> None:
    from proxy.forward.app import create_app
    from proxy.forward.server import serve

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    host, port = settings.host_port
    app = create_app(settings)
    app.on_startup.append(_tune_gc)
    app.on_cleanup.append(_stopped)
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    reuse_port = settings.workers > 1
    try:
        asyncio.run(serve(app, host=host, port=port, reuse_port=reuse_port, access_log=access_log, shutdown_timeout=30))
    except OSError as exc:  # the address was taken between the check and the bind
        raise ConfigError(f"listen: cannot listen on {settings.listen}: {exc.strerror or exc}") from None


def _serve_worker(settings: Settings) -> None:
    """A worker of ``--workers N``: the same server, its errors one line like the supervisor's."""
    _configure_logging(settings)
    try:
        _serve(settings)
    except ConfigError as exc:
        log.error("worker: %s", exc)
        sys.exit(2)


async def _ensure_fingerprint_secret(settings: Settings) -> None:
    from proxy.store import db

    async with open_engine(settings) as engine:
        await db.fingerprint_secret(engine, settings.fingerprint_secret)


def register(sub: Subparsers) -> None:
    serve = sub.add_parser("serve", help="run the proxy")
    add_common(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="listen address (default 127.0.0.1:8080)")
    serve.add_argument("--upstream", metavar="URL", help="upstream base URL, e.g. https://api.openai.com/v1")
    serve.add_argument(
        "--demo", action="store_true", help="serve the built-in demo upstream (no key, no network; `make serve`)"
    )
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
    serve.add_argument(
        "--relay",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy streamed bodies below aiohttp's stream API (server.relay); --no-relay: through aiohttp's streams",
    )
    serve.add_argument(
        "--writer",
        choices=[m.value for m in WriterMode],
        help="where recording runs (recorder.writer): a process of its own (default), a thread, the serving loop",
    )
    serve.set_defaults(func=cmd_serve)
