"""Paths no family of their own reads (the proxy records them as ``other``): models, files, images, audio.

Their usage is OpenAI's, in the Responses naming (``input_tokens``/``output_tokens``): images and
transcriptions carry it in the JSON body, speech streamed as SSE (``stream_format: "sse"``) in its
``speech.audio.done`` event; speech otherwise is a chunked binary body with no usage at all.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from proxy.testing.fake_upstream.common import REQUESTS, read_body, sse, stream_end, stream_start

AUDIO = b"ID3\x04\x00fake-mp3-frames" * 64


def _usage(prompt: int, output: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "output_tokens": output,
        "total_tokens": prompt + output,
        "input_tokens_details": {"text_tokens": prompt, "image_tokens": 0},
    }


async def models(request: web.Request) -> web.Response:
    request.app[REQUESTS].append({"headers": dict(request.headers), "body": None, "path": request.path})
    return web.json_response(
        {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}
    )


async def files(request: web.Request) -> web.Response:
    request.app[REQUESTS].append({"headers": dict(request.headers), "body": None, "path": request.path})
    return web.json_response({"object": "list", "data": [], "has_more": False})


async def images(request: web.Request) -> web.Response:
    body = await read_body(request)
    prompt = len(str((body or {}).get("prompt", "")).split())
    image = base64.b64encode(b"\x89PNG fake").decode()
    return web.json_response({"created": 0, "data": [{"b64_json": image}], "usage": _usage(prompt, 272)})


async def speech(request: web.Request) -> web.StreamResponse:
    body = await read_body(request) or {}
    if body.get("stream_format") == "sse":
        resp = await stream_start(request)
        for i in range(0, len(AUDIO), 256):
            await resp.write(
                sse({"type": "speech.audio.delta", "audio": base64.b64encode(AUDIO[i : i + 256]).decode()})
            )
        prompt = len(str(body.get("input", "")).split())
        await resp.write(sse({"type": "speech.audio.done", "usage": _usage(prompt, 40)}))
        await stream_end(request, resp)
        return resp
    resp = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
    await resp.prepare(request)
    for i in range(0, len(AUDIO), 256):
        await resp.write(AUDIO[i : i + 256])
    await resp.write_eof()
    return resp


async def transcriptions(request: web.Request) -> web.Response:
    await read_body(request)  # multipart: noted as raw bytes
    usage = {"type": "tokens", "input_tokens": 14, "output_tokens": 5, "total_tokens": 19}
    return web.json_response({"text": "hello from the fake", "usage": usage})


ROUTES = [
    web.get("/v1/models", models),
    web.get("/v1/files", files),
    web.post("/v1/images/generations", images),
    web.post("/v1/audio/speech", speech),
    web.post("/v1/audio/transcriptions", transcriptions),
]
