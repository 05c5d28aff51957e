"""The channel between a serving process and its writer process: frames over a socket pair.

Invariants:
- A frame is a 5-byte header (payload length, kind) and a payload. A record goes as msgpack
  (``PACKED``: about 1 µs a record, its tap as ``BodyTap.portable`` data) unless msgpack cannot hold
  it: text with lone surrogates (header bytes that are not UTF-8), an int past 64 bits, a tap that
  has started decoding (a long stream) or inflating; those go pickled (``PICKLED``: about 18 µs), as
  do control messages (``CONTROL``: a tuple naming the message). What the writer process wrote comes
  back as msgpack (``WRITTEN``: the records, bodies left out, and its counters). Pickle is safe here
  because both ends are this program: the socket pair is made by the serving process and handed to
  the child it starts; nothing else can write to it.
- Writing never blocks: frames go out together every ``FLUSH_EVERY`` (one system call for all the
  records of a few milliseconds, not one per record; sooner past ``FLUSH_BYTES``), and the transport
  buffers what the kernel does not take yet.
  What a side may have in flight is bounded by its caller (the serving side's queue bounds,
  ``record.intake``).
- Reading cuts frames out of one growing buffer without copying it per frame; a payload is handed on
  as ``bytes``.
"""

from __future__ import annotations

import asyncio
import enum
import pickle
import struct
from collections.abc import Callable
from typing import Any

import msgspec

from proxy.record.exchange import Exchange
from proxy.record.stats import RecorderStats
from proxy.record.tap import BodyTap

HEADER = struct.Struct("!IB")
PICKLE_PROTOCOL = 5
FLUSH_EVERY = 0.002  # seconds
FLUSH_BYTES = 256 << 10


class Kind(enum.IntEnum):
    PICKLED = 1
    CONTROL = 2
    PACKED = 3
    WRITTEN = 4


_encoder = msgspec.msgpack.Encoder()
_records = msgspec.msgpack.Decoder(Exchange)
_written = msgspec.msgpack.Decoder(tuple[list[Exchange], RecorderStats])


def _framed(kind: Kind, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind) + payload


def record_frame(ex: Exchange) -> bytes:
    tap = ex.body_tap
    state = tap.portable() if tap is not None else None
    if tap is None or state is not None:
        frame = bytearray(HEADER.size)
        ex.body_tap = state  # for the encoder only (``Recorder._hand`` lets go of the live tap once queued)
        try:
            _encoder.encode_into(ex, frame, HEADER.size)
        except (UnicodeEncodeError, OverflowError, TypeError, ValueError):
            pass
        else:
            HEADER.pack_into(frame, 0, len(frame) - HEADER.size, Kind.PACKED)
            return frame  # type: ignore[return-value]  # a bytearray: no copy of a long body
        finally:
            ex.body_tap = tap
    return _framed(Kind.PICKLED, pickle.dumps(ex, PICKLE_PROTOCOL))


def read_record(kind: Kind, payload: bytes | memoryview) -> Exchange:
    """The exchange a ``PACKED`` or ``PICKLED`` payload holds."""
    if kind is Kind.PACKED:
        ex = _records.decode(payload)
        if isinstance(ex.body_tap, dict):
            ex.body_tap = BodyTap.restore(ex, ex.body_tap)
        return ex  # type: ignore[no-any-return]
    return pickle.loads(payload)  # type: ignore[no-any-return]


def read_frame(frame: bytes) -> Exchange:
    """The exchange of a whole record frame (as ``record_frame`` made it)."""
    _, kind = HEADER.unpack_from(frame)
    return read_record(Kind(kind), memoryview(frame)[HEADER.size :])


def written_frame(records: list[Exchange], stats: RecorderStats) -> bytes:
    return _framed(Kind.WRITTEN, _encoder.encode((records, stats)))


def read_written(payload: bytes) -> tuple[list[Exchange], RecorderStats]:
    return _written.decode(payload)  # type: ignore[no-any-return]


def control_frame(*message: Any) -> bytes:
    payload = pickle.dumps(message, PICKLE_PROTOCOL)
    return HEADER.pack(len(payload), Kind.CONTROL) + payload


def unpickle(payload: bytes) -> Any:
    return pickle.loads(payload)


class Channel(asyncio.Protocol):
    """One end of the pair: ``on_frame(kind, payload)`` for each frame, ``on_lost()`` once it closes."""

    def __init__(self, on_frame: Callable[[Kind, bytes], None], on_lost: Callable[[], None]) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._at = 0
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        self._loop = asyncio.get_running_loop()

    def write(self, frame: bytes) -> bool:
        """Send within ``FLUSH_EVERY``; False when the other end is gone (nothing sent)."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._loop is None:
            return False
        self._out.append(frame)
        self._out_bytes += len(frame)
        if self._out_bytes >= FLUSH_BYTES:
            self._flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(FLUSH_EVERY, self._flush)
        return True

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        out, self._out, self._out_bytes = self._out, [], 0
        transport = self.transport
        if transport is None or transport.is_closing() or not out:
            return
        if len(out) == 1:
            transport.write(out[0])
        else:
            transport.writelines(out)

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        at, end = self._at, len(buf)
        size = HEADER.size
        frames = []
        with memoryview(buf) as view:  # released before the buffer is resized
            while end - at >= size:
                length, kind = HEADER.unpack_from(view, at)
                if end - at - size < length:
                    break
                start = at + size
                at = start + length
                frames.append((Kind(kind), bytes(view[start:at])))
        if at == end:
            buf.clear()
            at = 0
        elif at > (1 << 20) and at > end >> 1:  # most of the buffer is spent: drop it, once
            del buf[:at]
            at = 0
        self._at = at
        for kind, payload in frames:
            self.on_frame(kind, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_lost()
