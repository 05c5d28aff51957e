"""The demo upstream of ``proxy serve --demo`` (``python -m proxy.testing.fake_upstream --demo``).

Every response says what it is in ``X-Demo-Upstream``. It listens on a free loopback port, prints the port
on standard output, and serves until its standard input closes: the proxy that started it holds the other
end, so it ends with that proxy however the proxy ended (SIGKILL included).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

DEMO_HEADER = "X-Demo-Upstream"
DEMO_NOTE = "proxy.testing.fake_upstream: replies echo your last message; no model, no key, no network"


async def _demo_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers[DEMO_HEADER] = DEMO_NOTE


async def serve_demo(app: web.Application, host: str) -> None:
    app.on_response_prepare.append(_demo_header)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    try:
        await asyncio.to_thread(sys.stdin.buffer.read)
    finally:
        await runner.cleanup()


def run_demo(app: web.Application, host: str) -> None:
    # The proxy that started it decides when it ends (a terminal's Ctrl-C reaches the whole group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve_demo(app, host))
