"""The stream tee: upstream bytes go to the client the moment they arrive; a copy goes to the record.

Invariants:
- Each network read is written to the client before anything else is done with it; the only work per
  read on the hot path is a list append and a clock read. Decoding happens later, in the recorder.
- The one exception is ``UsageChunkFilter``, used only when the proxy itself asked the upstream for a
  usage chunk: it forwards whole events (a client cannot use half an event anyway) so it can hold back
  the usage-only chunk that client never asked for. Comment lines (keep-alives) still pass at once.
  A read made of whole events in which every ``"usage"`` is null (nearly every read of a stream) is
  forwarded as it is, without parsing: it cannot hold the usage-only chunk.
- ``copy_body`` always leaves the exchange with the bytes received, how far the client got
  (``delivered``: upstream bytes whose output the client's connection accepted) and a definite
  ``Ending``, whether it ends normally, the client leaves, the upstream fails, or the task is cancelled.
  What that means for the outcome is decided later, in ``record.outcome``.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from proxy.apis.chat.usage_option import UsageChunkFilter
from proxy.record.exchange import Ending, Exchange


async def copy_body(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    ex: Exchange,
    usage_filter: UsageChunkFilter | None = None,
) -> None:
    """Copy the upstream body to the prepared ``response`` and into ``ex``; never raises on I/O errors.

    Cancellation (the client left while ``handler_cancellation`` is on) is recorded, then re-raised.
    """
    parts: list[bytes] = []
    total = 0
    read = upstream.content.readany  # not ``iter_any``: one coroutine less per network read
    try:
        while data := await read():
            total += len(data)
            parts.append(data)
            ex.add_chunk(data, total)
            out = usage_filter.feed(data) if usage_filter is not None else data
            if out and not await _send(response, out):
                _client_gone(ex)
                return
            ex.delivered = total - (usage_filter.held if usage_filter is not None else 0)
        if usage_filter is not None and not await _send(response, usage_filter.close()):
            _client_gone(ex)
            return
        ex.delivered = total
        try:
            await response.write_eof()
        except ConnectionError:
            _client_gone(ex)
    except asyncio.CancelledError:
        _client_gone(ex)
        raise
    except TimeoutError:
        ex.finish(Ending.UPSTREAM_TIMEOUT, "upstream read timed out mid-response")
        _abort(request)
    except aiohttp.ClientError as exc:
        ex.finish(Ending.UPSTREAM_CUT, f"upstream failed mid-response: {type(exc).__name__}: {exc}"[:500])
        _abort(request)
    finally:
        ex.response_body = b"".join(parts)


async def _send(response: web.StreamResponse, data: bytes) -> bool:
    """Write to the client; False when the client has gone away."""
    if not data:
        return True
    try:
        await response.write(data)
    except ConnectionError:
        return False
    return True


def _client_gone(ex: Exchange) -> None:
    ex.finish(Ending.CLIENT_LEFT, "client disconnected mid-response")


def _abort(request: web.Request) -> None:
    # The upstream broke off; break the client's connection too, so its SDK sees the same truncated
    # response it would see without the proxy instead of a clean end of stream.
    transport = request.transport
    if transport is not None:
        transport.abort()
