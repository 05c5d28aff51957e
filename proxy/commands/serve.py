"""``proxy serve``: migrate, then run the proxy until SIGINT/SIGTERM (which drains the recorder)."""

from __future__ import annotations

import argparse
import logging

from proxy.commands import Subparsers, add_common, run, settings_from
from proxy.commands.db import prepare_database
from proxy.config import Exhausted, Mode, Timing


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from proxy.server import create_app

    settings = settings_from(args, require_upstream=True)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    revision = run(lambda: prepare_database(settings, upgrade=settings.database.auto_migrate))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    host, port = settings.host_port
    logging.getLogger("proxy").info(
        "listening on http://%s:%d/v1 -> %s (mode %s, schema %s)",
        host,
        port,
        settings.upstream.url or "(no upstream: replay only)",
        settings.mode,
        revision,
    )
    web.run_app(
        create_app(settings),
        host=host,
        port=port,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        # Cancel a handler as soon as its client disconnects, so upstream streams stop at once.
        handler_cancellation=True,
        shutdown_timeout=30,
        print=None,
    )
    return 0


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
    serve.set_defaults(func=cmd_serve)
