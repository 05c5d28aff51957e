"""The stream tee: upstream bytes go to the client the moment they arrive; a copy goes to the record.

Invariants:
- Each network read is written to the client before anything else is done with it; the only work per
  read before the write is handing it to the record's ``BodyTap`` (an append and a clock read). Decoding
  happens later, in the recorder, except for a long stream: the tap then decodes as it goes, after each
  write, a slice at a time with yields to the loop between slices (``BodyTap.catch_up``), so memory
  stays bounded and no step holds the loop for long.
- The one exception is the family's usage filter (``StreamFilter``), used only when the proxy itself
  asked the upstream for a usage chunk: it forwards whole events (a client cannot use half an event
  anyway) so it can hold back the usage-only chunk that client never asked for. Comment lines
  (keep-alives) still pass at once. A read made of whole events in which every ``"usage"`` is null
  (nearly every read of a stream) is forwarded as it is, without parsing: it cannot hold the usage chunk.
- A content-encoded stream (an upstream that gzips although asked for identity) is forwarded as sent
  while nothing must be hidden; when the filter must hide a chunk, the client gets the decoded events
  instead, its ``Content-Encoding`` removed (``forward.handler``), and a stream whose encoding breaks
  is then cut, as the upstream cutting it would be.
- ``copy_body`` always leaves the exchange with how far the client got (``delivered``: bytes of the
  decoded body whose output the client's connection accepted) and a definite ``Ending``, whether it
  ends normally, the client leaves, the upstream fails, or the task is cancelled. What that means for
  the outcome is decided later, in ``record.outcome``.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import aiohttp
from aiohttp import web

from proxy.apis.family import StreamFilter
from proxy.record.exchange import Ending, Exchange
from proxy.record.tap import BodyTap


class Passage(NamedTuple):
    """One streamed body's way, as the handler hands it to the tee or the relay (``forward.relay``)."""

    request: web.Request
    upstream: aiohttp.ClientResponse
    response: web.StreamResponse  # prepared
    ex: Exchange
    tap: BodyTap
    usage_filter: StreamFilter | None = None  # when the proxy hides what it asked the upstream for


async def copy_body(passage: Passage) -> None:
    """Copy the upstream body to the prepared response and into the tap; never raises on I/O errors.

    Cancellation (the client left while ``handler_cancellation`` is on) is recorded, then re-raised.
    """
    request, upstream, response, ex, tap, usage_filter = passage
    read = upstream.content.readany  # not ``iter_any``: one coroutine less per network read
    decoded = tap.out is not None  # the client gets the decoded bytes (an encoded stream to filter)
    try:
        while data := await read():
            behind = tap.feed(data)
            if decoded:
                await tap.catch_up()
                behind, data = False, tap.take_out()
                if tap.error is not None:
                    # What follows cannot be decoded, so it cannot be passed on: end it as a cut stream.
                    ex.finish(Ending.UPSTREAM_CUT, tap.error)
                    _abort(request)
                    return
            out = usage_filter.feed(data) if usage_filter is not None else data
            if out and not await _send(response, out):
                client_gone(ex)
                return
            if behind:  # after the write: the client never waits for the record
                await tap.catch_up()
            ex.delivered = tap.total - (usage_filter.held if usage_filter is not None else 0)
        await finish_body(response, ex, tap, usage_filter)
    except asyncio.CancelledError:
        client_gone(ex)
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        upstream_failed(request, ex, exc)


async def finish_body(
    response: web.StreamResponse, ex: Exchange, tap: BodyTap, usage_filter: StreamFilter | None
) -> None:
    """The body ended as the upstream meant it to: what the filter held, then the response's end."""
    if usage_filter is not None and not await _send(response, usage_filter.close()):
        client_gone(ex)
        return
    ex.delivered = tap.total
    try:
        await response.write_eof()
    except ConnectionError:
        client_gone(ex)


def upstream_failed(request: web.Request, ex: Exchange, exc: BaseException) -> None:
    """The upstream stalled (a read or total timeout) or broke off mid-body: recorded, the client cut too."""
    if isinstance(exc, TimeoutError):
        ex.finish(Ending.UPSTREAM_TIMEOUT, "upstream read timed out mid-response")
    else:
        ex.finish(Ending.UPSTREAM_CUT, f"upstream failed mid-response: {type(exc).__name__}: {exc}"[:500])
    _abort(request)


async def _send(response: web.StreamResponse, data: bytes) -> bool:
    """Write to the client; False when the client has gone away."""
    if not data:
        return True
    try:
        await response.write(data)
    except ConnectionError:
        return False
    return True


def client_gone(ex: Exchange) -> None:
    ex.finish(Ending.CLIENT_LEFT, "client disconnected mid-response")


def _abort(request: web.Request) -> None:
    # The upstream broke off; break the client's connection too, so its SDK sees the same truncated
    # response it would see without the proxy instead of a clean end of stream.
    transport = request.transport
    if transport is not None:
        transport.abort()
