"""The fake upstream's application: each family module brings its ``ROUTES``."""

from __future__ import annotations

import argparse

from aiohttp import web

from proxy.testing.fake_upstream import chat, embeddings, messages, other, responses
from proxy.testing.fake_upstream.common import CONTROL, REQUESTS, Control

FAMILIES = (chat, responses, embeddings, messages, other)


def create_app() -> web.Application:
    app = web.Application(client_max_size=256 << 20)
    app[REQUESTS] = []
    app[CONTROL] = Control()
    for family in FAMILIES:
        app.add_routes(family.ROUTES)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="A small fake OpenAI-compatible upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--reply-prefix", default="", help="text put before every reply")
    parser.add_argument("--demo", action="store_true", help="the demo upstream of `proxy serve --demo` (see demo.py)")
    args = parser.parse_args()
    app = create_app()
    app[CONTROL].reply_prefix = args.reply_prefix
    if args.demo:
        from proxy.testing.fake_upstream.demo import run_demo

        run_demo(app, args.host)
        return
    web.run_app(app, host=args.host, port=args.port, access_log=None)
