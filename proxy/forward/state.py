"""What a running proxy app holds (``ProxyState``), under typed app keys. Built once, in ``forward.app``."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.config import Settings, Upstream
from proxy.record.recorder import Recorder
from proxy.record.redact import Redactor
from proxy.replay.playback import Playback


@dataclass
class ProxyState:
    """What the app holds while it runs; built in ``_lifecycle``."""

    settings: Settings
    engine: AsyncEngine
    recorder: Recorder
    session: aiohttp.ClientSession
    secret: bytes
    upstreams: dict[str, Upstream]  # built once; the handler looks a mount up per request
    timeouts: dict[str, aiohttp.ClientTimeout]
    redactor: Redactor  # every masking of what is stored, logged or echoed
    redact: frozenset[str]
    request_drop: frozenset[str]  # request headers never forwarded (hop-by-hop and the proxy's own)
    playback: Playback | None = None  # replay and auto modes
    # Mounts whose upstream refused the stream_options the proxy adds: not added there again.
    no_usage_option: set[str] = field(default_factory=set)


SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", ProxyState)
