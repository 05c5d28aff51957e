"""The proxy inside the test process: one event-loop thread, one proxy per cassette, a template database.

Invariants:
- Every proxy runs on the runtime's one background event loop, so sync tests, async tests (on a loop of
  their own) and the threads they start all reach it the same way: HTTP on a free loopback port.
- A proxy keeps its recordings in its own SQLite file in a temporary directory, copied from a template
  migrated once per schema revision and kept in the plugin's scratch folder (a migration takes about a
  second; a copy, a millisecond).
- A proxy in ``Mode.REPLAY`` is given no upstream URL at all, so it cannot open an upstream connection.
- A middleware files each request under the session of the test running now: the nth identical request
  of a test gets the nth recording, every test starts at the first, and a test's recordings are
  exported alone. It also keeps every replay miss the proxy answered, with its explanation.
- A test's recordings are exported once every request it made has finished and the recorder has
  flushed (the public ``Recorder`` API only: ``flush``), then merged into its cassette.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.config import ConfigError, Mode, Settings, settings_from_tree
from proxy.forward.app import create_app
from proxy.forward.server import ProxyRunner
from proxy.forward.state import STATE
from proxy.headers import REPLAY_HEADER
from proxy.replay.export import Record, import_records, session_records
from proxy.replay.matchkey import KeyRules
from proxy.store import db, migrate
from proxy.testing.cassettes import Cassette, Merge, exclusive, scratch_dir
from proxy.testing.modes import Options, RecordMode, proxy_mode

log = logging.getLogger("proxy.testing")
T = TypeVar("T")
CALL_TIMEOUT = 120.0
# How long a finished test waits for its requests still in flight (a stream it left unread) to end.
IDLE_TIMEOUT = 10.0
ANTHROPIC_MOUNT = "anthropic"


class NeedsUpstream(Exception):
    """Recording was asked for and no upstream was given."""


class LoopThread:
    """An event loop running forever in a daemon thread; ``call`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="llm-proxy-loop", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class Miss(msgspec.Struct):
    """A request the proxy could not answer from the cassette, and the proxy's explanation of why."""

    method: str
    path: str
    message: str
    closest: list[dict[str, Any]] = []


@dataclass
class TestContext:
    """What one test shares with the proxy thread: its session, and the misses it met."""

    session: str
    misses: list[Miss] = field(default_factory=list)

    def take_misses(self) -> list[Miss]:
        taken, self.misses = self.misses, []
        return taken


def _miss(request: web.Request, response: web.Response) -> Miss:
    try:
        error = msgspec.json.decode(bytes(response.body or b"")).get("error") or {}  # type: ignore[arg-type]
    except (msgspec.DecodeError, AttributeError):
        error = {}
    return Miss(request.method, request.path, str(error.get("message") or "replay miss"), error.get("closest") or [])


class InProcessProxy:
    def __init__(self, settings: Settings, cassette: Cassette, workdir: Path) -> None:
        self.settings = settings
        self.cassette = cassette
        self.workdir = workdir
        self.current: TestContext | None = None  # set by the test thread, read by the loop thread
        self.port = 0
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._engine: AsyncEngine | None = None
        self._runner: ProxyRunner | None = None
        self.recordings = 0  # in the cassette when the proxy started

    @property
    def mode(self) -> Mode:
        return self.settings.mode

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, template: Path, records: list[Record]) -> None:
        shutil.copyfile(template, self.workdir / "proxy.db")
        self._engine = engine = db.create_engine(self.settings.database.url)
        if records:
            await import_records(engine, records, KeyRules(self.settings.replay.ignore))
        self.recordings = len(records)
        self._idle = asyncio.Event()
        self._idle.set()
        app = create_app(self.settings, engine)
        app.middlewares.append(self._middleware())
        self._runner = ProxyRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    def _middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        header = self.settings.session_header

        @web.middleware
        async def observe(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]) -> Any:
            test = self.current
            if test is not None:
                headers = request.headers.copy()
                headers[header] = test.session
                request = request.clone(headers=headers)
            assert self._idle is not None
            self._inflight += 1
            self._idle.clear()
            try:
                response = await handler(request)
            finally:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.set()
            if (
                test is not None
                and response.headers.get(REPLAY_HEADER) == "miss"
                and isinstance(response, web.Response)
            ):
                test.misses.append(_miss(request, response))
            return response

        return observe

    async def collect(self, session: str) -> list[Record]:
        """Everything ``session`` recorded, once its requests have finished and the recorder has written them."""
        assert self._idle is not None and self._runner is not None and self._engine is not None
        try:
            await asyncio.wait_for(self._idle.wait(), IDLE_TIMEOUT)
        except TimeoutError:
            log.warning("llm_proxy: requests still in flight after %.0f s; exporting without them", IDLE_TIMEOUT)
        await self._runner.app[STATE].recorder.flush()
        return await session_records(self._engine, session)

    async def close(self) -> None:
        try:
            if self._runner is not None:
                await self._runner.cleanup()  # drains the recorder before the engine goes
        finally:
            if self._engine is not None:
                await self._engine.dispose()
            shutil.rmtree(self.workdir, ignore_errors=True)


def proxy_settings(
    mode: Mode, options: Options, replay: dict[str, Any], workdir: Path, sessions: list[str]
) -> Settings:
    """A proxy for one cassette: its own SQLite file and spool; an upstream only when it may record.

    Replay answers from every session in the cassette (``sessions``), so tests sharing a cassette share
    its recordings, while each test keeps its own place in them (the cursor is per requesting session).
    It also plays recordings that did not complete (``include_partial``): a cassette gives back what
    happened, so a test that left a stream early, or met a cut stream, meets the same again.
    """
    if "sessions" in replay:
        raise ConfigError("llm_cassette: 'sessions' is not a marker option (a test replays its whole cassette)")
    tree: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "mode": mode.value,
        "database": {"url": f"sqlite+aiosqlite:///{workdir / 'proxy.db'}"},
        # A writer thread: a writer process per cassette would cost its start-up (about 0.6 s) in every
        # test that opens one, and a test run has no kill -9 to survive.
        "recorder": {"spool_dir": str(workdir / "spool"), "batch_delay": 0, "writer": "thread"},
        "replay": {"timing": options.timing.value, "include_partial": True, **replay, "sessions": sessions},
    }
    if mode is not Mode.REPLAY:
        if not options.upstream:
            raise NeedsUpstream(
                f"--llm-record-mode={options.record_mode} records, and needs --llm-upstream URL "
                "(or PROXY_UPSTREAM_URL), e.g. https://api.openai.com/v1"
            )
        tree["upstream"] = {"url": options.upstream}
        tree["upstreams"] = {ANTHROPIC_MOUNT: {"url": options.anthropic_upstream}}
    return settings_from_tree(tree)


async def _make_template(path: Path) -> None:
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await db.enable_wal(engine)
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def migrated_template(loop: LoopThread) -> Path:
    """An empty migrated database to copy, made once per schema revision and reused by later processes.

    Migrating takes about a second; every pytest process (each xdist worker) would pay it otherwise. The
    file is complete or absent: it is written beside its final name, then renamed, under a lock.
    """
    template = scratch_dir() / f"template-{migrate.HEAD}.db"
    if not template.is_file():
        with exclusive(template):
            if not template.is_file():
                partial = template.with_name(f".{template.name}.{os.getpid()}.tmp")
                try:
                    loop.call(_make_template(partial))
                    os.replace(partial, template)
                finally:
                    for leftover in partial.parent.glob(partial.name + "*"):
                        leftover.unlink(missing_ok=True)
    return template


class Runtime:
    """The plugin's machinery for one pytest process: the loop thread, the template, the shared proxies."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._root = Path(tempfile.mkdtemp(prefix="llm-proxy-"))
        self._loop = LoopThread()
        self._template = migrated_template(self._loop)
        self._shared: dict[tuple[Path, bytes], InProcessProxy] = {}

    def open(self, cassette: Cassette, replay: dict[str, Any]) -> InProcessProxy:
        """The proxy for a test: a new one for its own cassette, the running one for a shared cassette."""
        key = (cassette.path, msgspec.json.encode(replay, order="sorted"))
        if cassette.shared and key in self._shared:
            return self._shared[key]
        once = self.options.record_mode is RecordMode.ONCE and cassette.decide_once(self.options.run_id)
        mode = proxy_mode(self.options.record_mode, recording_once=once)
        workdir = Path(tempfile.mkdtemp(prefix="proxy-", dir=self._root))
        try:
            records = cassette.records() if mode is not Mode.RECORD else []
            sessions = sorted({r.session_id for r in records if r.session_id is not None})
            settings = proxy_settings(mode, self.options, replay, workdir, sessions)
            proxy = InProcessProxy(settings, cassette, workdir)
            self._loop.call(proxy.start(self._template, records))
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        if cassette.shared:
            self._shared[key] = proxy
        return proxy

    def finish(self, proxy: InProcessProxy, test: TestContext) -> None:
        """Write what the test recorded into its cassette; close the proxy unless the cassette is shared."""
        try:
            if proxy.mode is not Mode.REPLAY:
                recorded = self._loop.call(proxy.collect(test.session))
                if proxy.mode is Mode.AUTO:
                    merge = Merge.APPEND
                else:
                    merge = Merge.REPLACE_TEST if proxy.cassette.shared else Merge.REWRITE
                proxy.cassette.write(recorded, merge, test.session)
        finally:
            if not proxy.cassette.shared:
                self._loop.call(proxy.close())

    def close(self) -> None:
        try:
            for proxy in self._shared.values():
                with contextlib.suppress(Exception):
                    self._loop.call(proxy.close())
            self._shared.clear()
        finally:
            self._loop.stop()
            shutil.rmtree(self._root, ignore_errors=True)
