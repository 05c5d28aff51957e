"""The aiohttp application: routes, and the lifecycle that builds the proxy's state and tears it down.

Invariants:
- ``create_app`` expects a migrated schema (``proxy db upgrade``; ``proxy serve`` migrates first).
- Everything built at start (client session, recorder, replay index) is closed at shutdown, the recorder
  last but one (it drains its queue) and the engine last.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.admin import api as admin
from proxy.config import Settings, WriterMode
from proxy.forward.handler import forward
from proxy.forward.routes import control_headers, unknown_path_handler
from proxy.forward.state import SETTINGS, STATE, ProxyState
from proxy.forward.upstream import client_timeout, make_session, request_drop
from proxy.record.recorder import Recorder
from proxy.record.redact import Redactor
from proxy.replay.index import ReplayIndex
from proxy.replay.matchkey import KeyRules
from proxy.replay.playback import Playback
from proxy.store import db, retention
from proxy.usage.metrics import Metrics
from proxy.usage.pricing import PriceTable


def _recorder(
    settings: Settings, engine: AsyncEngine, key_rules: KeyRules, metrics: Metrics, redactor: Redactor
) -> Recorder:
    rec = settings.recorder
    recorder = Recorder(
        engine,
        queue_size=rec.queue_size,
        queue_max_bytes=rec.queue_max_bytes,
        batch_size=rec.batch_size,
        spool_dir=rec.spool_dir,
        spool_max_bytes=rec.spool_max_bytes,
        retry_interval=rec.retry_interval,
        redactor=redactor,
        key_rules=key_rules,
        on_written=metrics.observe_batch,
        pricing=PriceTable.from_settings(settings),
        batch_delay=rec.batch_delay,
        # A mode that records nothing (passthrough, replay) needs no writer process (about 90 MB).
        writer=rec.writer if settings.mode.records else WriterMode.THREAD,
    )
    metrics.bind(recorder)
    return recorder


async def _playback(settings: Settings, engine: AsyncEngine, key_rules: KeyRules) -> Playback | None:
    """The replay side, in modes that answer from recordings; recordings keyed under other rules re-keyed."""
    if not settings.mode.replays:
        return None
    index = ReplayIndex(engine, settings.replay, key_rules)
    await index.prepare()
    return Playback(index, settings.mode, settings.replay)


def _lifecycle(settings: Settings, engine: AsyncEngine | None):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        own_engine = engine is None
        dbs = settings.database
        eng = engine or db.create_engine(
            dbs.url, connect_timeout=dbs.connect_timeout, command_timeout=dbs.command_timeout
        )
        secret = await db.fingerprint_secret(eng, settings.fingerprint_secret)
        metrics = Metrics()
        key_rules = KeyRules(settings.replay.ignore)  # the one set of rules, for recording and replay
        redactor = Redactor.from_settings(settings)
        recorder = _recorder(settings, eng, key_rules, metrics, redactor)
        await recorder.start()
        playback = await _playback(settings, eng, key_rules)
        session = make_session(settings.upstream.max_connections)
        app[STATE] = ProxyState(
            settings=settings,
            engine=eng,
            recorder=recorder,
            session=session,
            secret=secret,
            upstreams=settings.all_upstreams(),
            timeouts={name: client_timeout(up) for name, up in settings.all_upstreams().items()},
            redactor=redactor,
            redact=frozenset(h.lower() for h in settings.redact_headers),
            request_drop=request_drop(control_headers(settings)),
            playback=playback,
        )
        sweeper = (
            asyncio.create_task(retention.run_forever(eng, settings.retention))
            if retention.enabled(settings.retention)
            else None
        )
        app[admin.ADMIN] = admin.AdminState(settings, eng, recorder, metrics)
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
            await session.close()
            await recorder.close()
            if own_engine:
                await eng.dispose()

    return ctx


def create_app(settings: Settings, engine: AsyncEngine | None = None) -> web.Application:
    """The proxy as an aiohttp app; the schema must already be migrated (``proxy db upgrade``)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_lifecycle(settings, engine))
    admin.register(app)
    for prefix in ("", "/s/{session}", "/{upstream}", "/s/{session}/{upstream}"):
        app.router.add_route("*", prefix + "/v1/{tail:.*}", forward)
    # Last: only what no route above serves (matched in order, so the hot path never reaches it).
    app.router.add_route("*", "/{anything:.*}", unknown_path_handler(settings))
    return app
