"""The one place that reaches below aiohttp's public API: hooking a response body's ``StreamReader``.

Checked against aiohttp 3.14.5 (C parser and pure-Python parser; ``client_proto.ResponseHandler``,
``streams.StreamReader``, ``http_parser``/``_http_parser``, ``http_writer.StreamWriter``,
``web_response.StreamResponse``). ``attach`` verifies every assumption below on the objects at hand and
returns None when one does not hold (another aiohttp, a compressing writer, a reader already finished...);
the caller then uses the tee (``forward.tee``), which uses only the public API.

What it depends on, and why:
- The HTTP parser (either one) hands body bytes to the reader it made for the response by calling, in the
  upstream protocol's ``data_received``, ``feed_data``, ``begin_http_chunk_receiving``,
  ``end_http_chunk_receiving``, ``feed_eof``, and ``set_exception`` (cut, read timeout, release). The
  reader (``ClientResponse.content``, a plain ``StreamReader`` because the session does not decompress)
  is switched to ``RelayReader``, a subclass with no slots of its own (so ``__class__`` may be assigned),
  whose methods hand the same calls to a ``Sink``. The sink rides in the reader's private ``_protocol``
  slot, which the reader otherwise uses only to pause and resume reading (it is put back before any
  ``StreamReader`` method runs again).
- ``ResponseHandler._payload is reader``: the protocol feeds this reader (no decompressing wrapper).
- ``ResponseHandler.pause_reading``/``resume_reading`` (public methods; pausing also stops the
  ``sock_read`` timer, resuming re-arms it and re-feeds the parser what it held back). Pausing pauses the
  parser too, which is only sound while it is parsing: the sink calls ``pause`` only from ``feed_data``.
- ``StreamReader._timer``: the ``total`` timeout's context; the relay awaits inside it, as ``readany``
  would.
- ``ResponseHandler.read_timeout`` (a public property: ``sock_read``) and ``_on_read_timeout``: while
  hooked the protocol's own ``sock_read`` is off (it makes and cancels a timer on every read) and the relay
  keeps the same deadline with one timer, failing the body through ``_on_read_timeout`` as aiohttp's
  timer would; ``release`` puts the setting back.
- ``StreamWriter``: ``_compress``, ``_on_chunk_sent``, ``on_body_write``, ``_headers_buf`` and ``_eof``
  (nothing may transform, observe or still hold what is written), ``chunked`` (the framing owed to the
  client), ``output_size``/``buffer_size`` (kept counted so the access log's body length is right).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import _EXC_SENTINEL, BaseTimerContext
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

VERSIONS_CHECKED = ("3.14.5",)


class Sink(Protocol):
    """Where a hooked reader's calls go (``forward.relay.Relay``); ``hooked`` is set by ``attach``."""

    hooked: Hooked | None

    def data(self, data: bytes) -> None: ...

    def eof(self) -> None: ...

    def error(self, exc: BaseException) -> None: ...


class RelayReader(StreamReader):
    """A ``StreamReader`` that buffers nothing: every call the parser makes goes to the sink at once."""

    __slots__ = ()

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        self.total_bytes += len(data)
        self._protocol.data(data)  # type: ignore[attr-defined]
        return False

    def begin_http_chunk_receiving(self) -> None:
        # The reader's chunk bookkeeping is for ``readchunk``; it must exist if the reader is given back.
        if self._http_chunk_splits is None:
            self._http_chunk_splits = collections.deque()

    def end_http_chunk_receiving(self) -> None:
        pass

    def feed_eof(self) -> None:
        sink: Sink = self._protocol  # type: ignore[assignment]
        _given_back(self)
        sink.eof()
        self.feed_eof()  # the plain reader's: marks the end and releases the connection to the pool

    def set_exception(self, exc: BaseException, exc_cause: BaseException = _EXC_SENTINEL) -> None:
        sink: Sink = self._protocol  # type: ignore[assignment]
        _given_back(self)
        sink.error(exc)
        self.set_exception(exc, exc_cause)


def _given_back(reader: StreamReader) -> None:
    """The reader as aiohttp made it (idempotent)."""
    if type(reader) is RelayReader:
        sink: Sink = reader._protocol  # type: ignore[assignment]
        reader.__class__ = StreamReader
        assert sink.hooked is not None
        reader._protocol = sink.hooked.upstream


@dataclass(slots=True)
class Hooked:
    """One response body, hooked: what the relay writes to and pauses."""

    reader: StreamReader
    upstream: ResponseHandler | None  # None when not ``live``
    client: RequestHandler
    writer: StreamWriter
    timer: BaseTimerContext
    buffered: bytes  # what the reader held before it was hooked, in order before anything fed later
    chunked: bool  # the client's response is chunked: each write is framed as one chunk
    live: bool  # False: the body ended (or failed) before it could be hooked; ``buffered`` is all of it
    read_timeout: float | None  # the upstream's ``sock_read``, kept by the relay while hooked

    def release(self) -> None:
        """Stop hooking: later reads are buffered by the reader as usual (idempotent).

        ``sock_read`` is set back but not re-armed: a body released before its end is not read again (the
        handler's release of the response closes its connection).
        """
        _given_back(self.reader)
        if self.upstream is not None and self.read_timeout is not None:
            self.upstream.read_timeout = self.read_timeout

    def read_timed_out(self) -> None:
        """The upstream sent nothing for ``read_timeout``: failed as aiohttp's own timer fails it."""
        self.upstream._on_read_timeout()  # type: ignore[union-attr]

    def pause_upstream(self) -> None:
        """Stop reading the upstream; call only from ``Sink.data`` (the parser is then parsing)."""
        self.upstream.pause_reading()  # type: ignore[union-attr]

    def resume_upstream(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.resume_reading()

    def count(self, n: int) -> None:
        writer = self.writer
        writer.output_size += n
        writer.buffer_size += n


def attach(up: aiohttp.ClientResponse, request: Any, sink: Sink) -> Hooked | None:
    """Hook ``up``'s body to ``sink``; None (nothing changed) when aiohttp is not as checked."""
    reader = up.content
    writer = request.writer
    if type(reader) is not StreamReader or not _writer_plain(writer) or not isinstance(writer.protocol, RequestHandler):
        return None
    # A body that has ended (or failed) already needs no hook, and its connection may be back in the pool.
    protocol = None if reader.is_eof() or reader.exception() is not None else _feeding(up, reader)
    if protocol is False:
        return None
    # ``read_nowait`` may resume a paused upstream, whose parser may then feed the reader again, or end it.
    parts = []
    while reader.exception() is None and (part := reader.read_nowait()):  # it raises a failed reader's error
        parts.append(part)
    live = protocol is not None and reader.exception() is None and not reader.is_eof()
    sink.hooked = hooked = Hooked(
        reader=reader,
        upstream=protocol,
        client=writer.protocol,
        writer=writer,
        timer=reader._timer,
        buffered=b"".join(parts),
        chunked=bool(writer.chunked),
        live=live,
        read_timeout=protocol.read_timeout if live else None,  # type: ignore[union-attr]
    )
    if live:
        reader._protocol = sink  # type: ignore[assignment]
        reader.__class__ = RelayReader
        protocol.read_timeout = None  # type: ignore[union-attr]
    return hooked


def _feeding(up: aiohttp.ClientResponse, reader: StreamReader) -> ResponseHandler | bool:
    """The protocol whose parser feeds ``reader`` directly; False when that is not as checked."""
    connection = up.connection
    protocol = connection.protocol if connection is not None else None
    if (
        not isinstance(protocol, ResponseHandler)
        or getattr(protocol, "_payload", None) is not reader
        or getattr(reader, "_protocol", None) is not protocol
        or not hasattr(getattr(protocol, "_parser", None), "pause_reading")
        or not isinstance(getattr(ResponseHandler, "read_timeout", None), property)
        or not callable(getattr(protocol, "_on_read_timeout", None))
    ):
        return False
    return protocol


def _writer_plain(writer: Any) -> bool:
    return (
        type(writer) is StreamWriter
        and writer._compress is None
        and writer._on_chunk_sent is None
        and getattr(writer, "on_body_write", None) is None
        and writer._headers_buf is None
        and not writer._eof
    )
