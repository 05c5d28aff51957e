"""Paths no family reads (the proxy records them as ``other``): the model list."""

from __future__ import annotations

from aiohttp import web

from proxy.testing.fake_upstream.common import REQUESTS


async def models(request: web.Request) -> web.Response:
    request.app[REQUESTS].append({"headers": dict(request.headers), "body": None, "path": request.path})
    return web.json_response(
        {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}
    )


ROUTES = [web.get("/v1/models", models)]
