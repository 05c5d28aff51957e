"""The stream tee: upstream bytes go to the client the moment they arrive; a copy goes to the record.

Invariants:
- Each network read is written to the client before anything else is done with it; the only work per
  read on the hot path is a list append and a clock read. Decoding happens later, in the recorder.
- The one exception is ``UsageChunkFilter``, used only when the proxy itself asked the upstream for a
  usage chunk: it forwards whole events (a client cannot use half an event anyway) so it can hold back
  the usage-only chunk that client never asked for. Comment lines (keep-alives) still pass at once.
  A read made of whole events in which every ``"usage"`` is null (nearly every read of a stream) is
  forwarded as it is, without parsing: it cannot hold the usage-only chunk.
- ``copy_body`` always leaves the exchange with the bytes received and a definite ``Outcome``, whether
  it ends normally, the client leaves, the upstream fails, or the task is cancelled.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
from aiohttp import web

from proxy.exchange import Exchange, Outcome
from proxy.schemas import DECODE_ERRORS, USAGE_PROBE_DECODER
from proxy.sse import SSEParser

CLIENT_CLOSED_REQUEST = 499
_LINE_END = re.compile(rb"\r\n|\r|\n")
_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
_NULL_USAGE_STR = re.compile(_NULL_USAGE.pattern.decode())  # the same test on an event's decoded text


class UsageChunkFilter:
    """Re-frames an SSE stream on event boundaries and drops usage-only chunks.

    An event larger than ``max_event_bytes`` cannot be held back without unbounded memory: the filter
    then gives up, flushes what it holds and passes the rest of the stream through as received.
    """

    __slots__ = ("_base", "_buf", "_parser", "dropped", "max_event_bytes", "passthrough")

    def __init__(self, max_event_bytes: int = 16 << 20) -> None:
        self._parser = SSEParser()
        self._buf = bytearray()
        self._base = 0  # absolute stream offset of _buf[0]
        self.dropped = 0
        self.max_event_bytes = max_event_bytes
        self.passthrough = False

    def feed(self, data: bytes) -> bytes:
        if self.passthrough:
            return data
        if not self._buf and self._parser.at_boundary:
            # Whole events, none of which can be usage-only, go out without parsing: that is every
            # read of a typical stream (its chunks carry "usage": null) up to its last blank line.
            cut = _last_blank_line_end(data)
            whole = cut == len(data)
            if cut and _no_usage_value(data, cut) and self._parser.skip(data if whole else data[:cut]):
                self._base += cut
                if whole:
                    return data
                return data[:cut] + self._parse(data[cut:])
        return self._parse(data)

    def _parse(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        start = 0
        for event in self._parser.feed(data):
            end = event.end - self._base
            if not _is_usage_only(event.data):
                out += self._buf[start:end]
            else:
                self.dropped += 1
            start = end
        if start:
            del self._buf[:start]
            self._base += start
        if self._buf and (_only_comments(self._buf) or len(self._buf) > self.max_event_bytes):
            self.passthrough = len(self._buf) > self.max_event_bytes
            out += self._buf
            self._base += len(self._buf)
            self._buf.clear()
        return bytes(out)

    def close(self) -> bytes:
        """Whatever is left (an incomplete last event) goes out as sent."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def _last_blank_line_end(data: bytes) -> int:
    """Offset just past the last LF LF or CRLF CRLF in ``data``; 0 when there is none."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _no_usage_value(data: bytes, end: int) -> bool:
    """True when every ``"usage"`` in ``data[:end]`` is followed by null: no event there is usage-only."""
    n = data.count(b'"usage"', 0, end)
    return n == 0 or n == len(_NULL_USAGE.findall(data, 0, end))


def _is_usage_only(data: str) -> bool:
    if '"usage"' not in data:
        return False
    if data.count('"usage"') == 1 and _NULL_USAGE_STR.search(data):
        return False  # the usual chunk, '"usage": null', decided without decoding it
    try:
        return USAGE_PROBE_DECODER.decode(data).usage_only
    except DECODE_ERRORS:  # undecodable chunks are forwarded, never judged here
        return False


def _only_comments(buf: bytearray) -> bool:
    """True when ``buf`` holds only complete comment lines and blank lines (keep-alives)."""
    if buf[-1:] not in (b"\n", b"\r") or buf[:1] not in (b":", b"\n", b"\r"):
        return False
    return all(not line or line.startswith(b":") for line in _LINE_END.split(bytes(buf)))


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
        if usage_filter is not None and not await _send(response, usage_filter.close()):
            _client_gone(ex)
            return
        try:
            await response.write_eof()
        except ConnectionError:
            _client_gone(ex)
    except asyncio.CancelledError:
        _client_gone(ex)
        raise
    except TimeoutError:
        ex.finish(Outcome.UPSTREAM_TIMEOUT, "upstream read timed out mid-response")
        _abort(request)
    except aiohttp.ClientError as exc:
        ex.finish(Outcome.UPSTREAM_CUT, f"upstream failed mid-response: {type(exc).__name__}: {exc}"[:500])
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
    ex.finish(Outcome.CLIENT_DISCONNECTED, "client disconnected mid-response")
    ex.status = CLIENT_CLOSED_REQUEST


def _abort(request: web.Request) -> None:
    # The upstream broke off; break the client's connection too, so its SDK sees the same truncated
    # response it would see without the proxy instead of a clean end of stream.
    transport = request.transport
    if transport is not None:
        transport.abort()
