"""What every family of the fake upstream shares: the state a test turns, request reading, errors, SSE framing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web


@dataclass
class Control:
    """Knobs a test turns while the server runs (app state itself is frozen once started)."""

    # When set, every stream waits after its first chunk until the event is set.
    gate: asyncio.Event | None = None
    # Progress of the last `fake-firehose` stream: bytes planned and bytes handed to the socket so far.
    stream_bytes: int = 0
    bytes_sent: int = 0
    # A second upstream that answers differently (replay re-send tests): text put before every reply,
    # and the JSON arguments of the fake tool call.
    reply_prefix: str = ""
    tool_arguments: str = '{"city": "Paris", "unit": "celsius"}'


REQUESTS = web.AppKey("requests", list)
CONTROL = web.AppKey("control", Control)
ENC = msgspec.json.Encoder()
DEC = msgspec.json.Decoder()


async def read_body(request: web.Request) -> Any:
    """The request's JSON body (None when it is not JSON), noted in ``app[REQUESTS]``."""
    raw = await request.read()
    try:
        body = DEC.decode(raw) if raw else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        body = None
    request.app[REQUESTS].append({"headers": dict(request.headers), "body": body, "raw": raw, "path": request.path})
    return body


async def read_openai_request(request: web.Request) -> dict[str, Any] | web.Response:
    """The JSON object an OpenAI-style request sends (noted like ``read_body``), or the answer it gets
    instead: OpenAI's 400 for a body that is not an object with a string ``model``, the error a
    ``fake-error-NNN`` model asks for."""
    body = await read_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("model", ""), str):
        return invalid_body()
    refused = status_error(str(body.get("model")))
    return refused if refused is not None else body


async def pause(request: web.Request) -> None:
    """The wait ``x-fake-delay-ms`` asks for before a JSON reply."""
    if delay_of(request):
        await asyncio.sleep(delay_of(request))


def invalid_body() -> web.Response:
    """What OpenAI answers to a body it cannot parse or validate."""
    err = {
        "error": {
            "message": "We could not parse the JSON body of your request.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    return web.json_response(err, status=400)


def status_error(model: str) -> web.Response | None:
    """``fake-error-401`` / ``-429`` / ``-500``: that status with OpenAI's error body and headers."""
    status = model.removeprefix("fake-error-")
    if not (model.startswith("fake-error-") and status.isdigit()):
        return None
    kinds = {401: "invalid_api_key", 429: "rate_limit_exceeded", 500: "server_error"}
    kind = kinds[int(status)]
    body = {"error": {"message": f"fake upstream error {status}", "type": kind, "code": kind}}
    headers = {"x-request-id": f"req_fake_{status}", "x-ratelimit-remaining-requests": "0"}
    if status == "429":
        headers["retry-after"] = "0"
    return web.json_response(body, status=int(status), headers=headers)


def delay_of(request: web.Request) -> float:
    """``x-fake-delay-ms`` in seconds: the pace of a stream's chunks, the wait before a JSON reply."""
    return float(request.headers.get("x-fake-delay-ms", "0")) / 1000


def events_of(request: web.Request) -> int | None:
    """``x-fake-events``: how many content chunks a reply has (None: one per word)."""
    value = request.headers.get("x-fake-events")
    return int(value) if value is not None else None


def echo_pieces(request: web.Request, text: str) -> list[str]:
    """The echo reply to ``text`` word by word, after the app's ``reply_prefix`` (repeated or cut to
    ``x-fake-events`` pieces when asked)."""
    events, prefix = events_of(request), request.app[CONTROL].reply_prefix
    pieces = [f"{w} " for w in f"{prefix}Echo: {text or 'nothing'}".split()]
    if events is not None:
        pieces = (pieces * (events // max(len(pieces), 1) + 1))[:events]
    return pieces


def sse(obj: Any, eol: str = "\n", event: str | None = None) -> bytes:
    """One server-sent event carrying ``obj`` as JSON (with an ``event:`` line when named)."""
    head = f"event: {event}{eol}" if event is not None else ""
    return f"{head}data: {ENC.encode(obj).decode()}{eol}{eol}".encode()


async def stream_start(request: web.Request, request_id: str = "req_fake_stream") -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "x-request-id": request_id}
    )
    await resp.prepare(request)
    return resp


async def write_events(
    request: web.Request, resp: web.StreamResponse, events: list[bytes], before: dict[int, bytes] | None = None
) -> None:
    """Writes the events paced by ``x-fake-delay-ms``, held after the first one while ``CONTROL.gate`` is
    set; ``before`` puts extra bytes (keep-alive comments) before the event of that index."""
    gate, delay = request.app[CONTROL].gate, delay_of(request)
    for k, data in enumerate(events):
        if k == 1 and gate is not None:
            await gate.wait()
        if delay and k:
            await asyncio.sleep(delay)
        if before and k in before:
            await resp.write(before[k])
        await resp.write(data)


async def stream_end(request: web.Request, resp: web.StreamResponse) -> None:
    """Ends the body, after ``x-fake-eof-delay-ms`` when asked (a client may leave before the upstream's end)."""
    if "x-fake-eof-delay-ms" in request.headers:
        await asyncio.sleep(float(request.headers["x-fake-eof-delay-ms"]) / 1000)
    await resp.write_eof()


async def send_stream(
    request: web.Request,
    events: list[bytes],
    *,
    request_id: str = "req_fake_stream",
    before: dict[int, bytes] | None = None,
    cut_after: bool = False,
) -> web.StreamResponse:
    """A whole event stream: its headers, the events as ``write_events`` writes them, then the end of the
    body (``stream_end``), or with ``cut_after`` a dropped connection instead (``cut``)."""
    resp = await stream_start(request, request_id)
    await write_events(request, resp, events, before)
    if cut_after:
        cut(request)
    else:
        await stream_end(request, resp)
    return resp


def cut(request: web.Request) -> None:
    """Drops the connection without ending the body (what a crashed upstream does)."""
    assert request.transport is not None
    request.transport.abort()
