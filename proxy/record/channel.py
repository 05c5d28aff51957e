"""The channel between a serving process and its writer process: frames over a socket pair.

Invariants:
- A frame is a 5-byte header (payload length, kind) and a payload: a pickled ``Exchange`` (``RECORD``)
  or a pickled tuple naming a message and its values (``CONTROL``). Pickle is safe here because both
  ends are this program: the socket pair is made by the serving process and handed to the child it
  starts; nothing else can write to it. It also keeps what JSON or msgpack would refuse: text with lone
  surrogates (header bytes that are not UTF-8), the live fold of a stream (``record.tap``).
- Writing never blocks: the transport buffers what the kernel does not take yet. What a side may have
  in flight is bounded by its caller (the serving side's queue bounds, ``record.intake``).
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

HEADER = struct.Struct("!IB")
PICKLE_PROTOCOL = 5


class Kind(enum.IntEnum):
    RECORD = 1
    CONTROL = 2


def record_frame(record: object) -> bytes:
    payload = pickle.dumps(record, PICKLE_PROTOCOL)
    return HEADER.pack(len(payload), Kind.RECORD) + payload


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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def write(self, frame: bytes) -> bool:
        """False when the other end is gone (the frame was not sent)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(frame)
        return True

    def close(self) -> None:
        if self.transport is not None:
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
