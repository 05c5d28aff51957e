"""Embeddings: one vector per input, usage from word counts (embeddings report prompt tokens only)."""

from __future__ import annotations

from aiohttp import web

from proxy.testing.fake_upstream.common import invalid_body, read_body


async def embeddings(request: web.Request) -> web.Response:
    body = await read_body(request)
    if not isinstance(body, dict):
        return invalid_body()
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    tokens = sum(len(str(i).split()) for i in items)
    return web.json_response(
        {
            "object": "list",
            "model": body.get("model"),
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(items))],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


ROUTES = [web.post("/v1/embeddings", embeddings)]
