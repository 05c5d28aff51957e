"""The record's copy of a response body, taken as it passes the tee: a capped head, and a fold of the whole.

Invariants:
- The hot path only appends: ``feed`` keeps the read (the part that fits under the cap) and notes when
  it arrived. Decoding waits until ``LAG`` bytes are undecoded; past that (a long stream) it goes on in
  slices of about ``SLICE`` bytes with a yield to the loop between them (``catch_up``), so no step holds
  the loop longer than a slice, whatever the size. The writer decodes what is left (at most ``LAG``) in
  ``finish``: a short stream is decoded there, after the client has it, as before.
- The record keeps the head of the body, at most ``cap`` bytes (``max_record_bytes``), and read marks
  only for that head; every byte is still counted (``Exchange.response_bytes``) and every event of an
  event stream still folded by its API family, so usage, TTFT, the outcome and the assembled response
  come from the whole stream (the assembled response keeps at most ``TEXT_LIMIT`` characters of text,
  1 Mi, or ``cap`` if smaller: it is encoded and stored in one piece).
- A Content-Encoding the upstream applied (gzip, deflate) is undone as the bytes arrive (a
  ``zlib.decompressobj``, in slices, so a small read that inflates to a lot never stalls the loop). The
  kept body, its read marks, ``response_bytes`` and ``delivered`` are then all counted in decoded bytes.
  An encoding that breaks mid-stream stops the decoding, never the stream: the record keeps what
  decoded, says why in ``error``, and the outcome cannot be ``complete`` without the end marker.
- An event that grows past ``event_limit`` (the proxy gives ``max_record_bytes``) without ending is
  dropped, counted as a decode error, rather than held: memory stays bounded even for a stream that
  never sends a blank line.
- Never raises on what an upstream sent.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections import deque
from collections.abc import Generator, Iterator
from itertools import accumulate
from typing import Any

from proxy.apis.families import family_for
from proxy.apis.family import Event, Folded, StreamFold
from proxy.apis.sse import SSEParser
from proxy.record.exchange import Ending, Exchange
from proxy.record.slices import complete

# Undecoded bytes a stream may run ahead of its decoding before the tee decodes as it goes.
LAG = 128 << 10
# About this many bytes are decoded (or inflated) per step; about a millisecond of work.
SLICE = 64 << 10
# Characters of text an assembled response keeps. The longest real answers (100k tokens) are a few
# hundred KB; past that the assembled view would only cost time (it is encoded and stored in one piece).
TEXT_LIMIT = 1 << 20
# Compressed bytes inflated per call.
INFLATE_INPUT = 4 << 10


def split_marks(body: bytes, marks: list[tuple[float, int]]) -> Iterator[tuple[float, bytes]]:
    """``body`` cut at its read marks ``(offset_ms, end)``: the reads as they came."""
    start = 0
    for offset, end in marks:
        yield offset, body[start:end]
        start = end


def inflater(encoding: str | None) -> _Inflater | None:
    """An incremental decoder for a Content-Encoding; None for identity. Unknown codings raise ValueError."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return _Inflater(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return _Inflater(None)
    raise ValueError(f"unsupported content-encoding {enc!r}")


class _Inflater:
    """gzip or deflate; ``deflate`` as sent in practice: zlib-wrapped (RFC 9110) or raw, told by its first bytes."""

    def __init__(self, wbits: int | None) -> None:
        self._d = zlib.decompressobj(wbits) if wbits is not None else None
        self._before = zlib.decompressobj()

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._d is None:
            wrapped = len(data) >= 2 and (data[0] & 0x0F) == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        # zlib drops a call's whole output when it meets bad data; the copy lets ``salvage`` redo it.
        self._before = self._d.copy()
        return self._d.decompress(data, max_length)

    def salvage(self, data: bytes, max_length: int) -> bytes:
        """What ``data`` inflated to before the bad bytes in it (the last call failed), to within 64 bytes."""
        d, out = self._before, []
        for i in range(0, len(data), 64):
            try:
                out.append(d.decompress(data[i : i + 64], max_length))
            except zlib.error:
                break
        return b"".join(out)

    @property
    def unconsumed_tail(self) -> bytes:
        return self._d.unconsumed_tail if self._d is not None else b""

    @property
    def eof(self) -> bool:
        """The compressed stream's own end was seen (a body without it was cut)."""
        return self._d is not None and self._d.eof

    def __reduce__(self) -> tuple[type[_Spent], tuple[bool]]:
        # zlib's state cannot be pickled; a tap crosses to the writer process only with nothing left to
        # inflate (``BodyTap.__getstate__``), so all that is still asked of its inflater is ``eof``.
        return _Spent, (self.eof,)


class _Spent:
    """An inflater with nothing left to inflate, as it arrives in the writer process."""

    unconsumed_tail = b""

    def __init__(self, eof: bool) -> None:
        self.eof = eof

    def decompress(self, data: bytes, max_length: int) -> bytes:
        raise zlib.error("the stream's end was already passed")

    salvage = decompress


class EventDecoder:
    """Server-sent events folded by an API family as they come, with their arrival times."""

    def __init__(self, fold: StreamFold, event_limit: int) -> None:
        self.fold = fold
        self.parser = SSEParser()
        self.event_limit = event_limit
        self.dropped = 0  # events that grew past ``event_limit`` and were not held

    def feed(self, reads: list[tuple[float, bytes]]) -> None:
        """Consecutive reads ``(offset_ms, bytes)``; the events they complete go to the fold."""
        parser = self.parser
        body = reads[0][1] if len(reads) == 1 else b"".join(data for _, data in reads)
        if b"\r" in body or parser.pending + len(body) > self.event_limit:
            self._feed_reads(reads)
            return
        # The parser takes only what the cheap way cannot: the end of an event an earlier slice began
        # (up to the first blank line) and the start of one the next slice ends (after the last); the
        # whole events between them are split on blank lines (most streams, most slices). No event can
        # outgrow ``event_limit`` here, and the parser's result does not depend on how LF-only bytes
        # are split, so this folds what feeding it read by read would.
        base = parser.consumed
        ends = list(accumulate(len(data) for _, data in reads))

        def arrived(end: int) -> float:
            """When the read that holds byte ``end - 1`` of ``body`` arrived: the one that completed an event."""
            i = bisect_left(ends, end)
            return reads[i][0] if i < len(reads) else reads[-1][0]

        events: list[Event] = []

        def parse(piece: bytes) -> None:
            events.extend(Event(arrived(ev.end - base), ev.end, ev.event, ev.data) for ev in parser.feed(piece))

        start = 0
        if not parser.at_boundary:
            first = body.find(b"\n\n")
            start = first + 2 if first >= 0 else len(body)
            parse(body[:start])
        last = body.rfind(b"\n\n", start)
        stop = last + 2 if last >= 0 else start
        if stop > start:
            middle = body[start:stop] if start or stop < len(body) else body
            simple = simple_events(middle)
            if simple is not None and parser.skip(middle):
                events.extend(Event(arrived(start + end), base + start + end, "", data) for end, data in simple)
            else:
                parse(middle)
        if stop < len(body):
            parse(body[stop:])
        self.fold.feed(events)

    def _feed_reads(self, reads: list[tuple[float, bytes]]) -> None:
        """The general way: the parser, read by read, dropping an event that outgrows ``event_limit``."""
        parser = self.parser
        events: list[Event] = []
        for offset, data in reads:
            events.extend(Event(offset, ev.end, ev.event, ev.data) for ev in parser.feed(data))
            if parser.pending > self.event_limit:
                parser.drop()
                self.dropped += 1
        self.fold.feed(events)


def simple_events(body: bytes) -> list[tuple[int, bytes]] | None:
    """``(end, data)`` of each event when ``body`` is nothing but ``data: ...`` LF LF events; else None.

    ``end`` is the offset just past the event's blank line.

    That is how OpenAI, vLLM and most servers frame every stream, and splitting on blank lines is many
    times cheaper than the general parser. Anything else (CR line ends, comments, other fields, several
    data lines, a BOM, an unfinished last event) returns None and the caller uses ``SSEParser``.
    """
    if not body.endswith(b"\n\n") or b"\r" in body:
        return None
    out = []
    end = 0
    for part in body[:-2].split(b"\n\n"):
        end += len(part) + 2
        if b"\n" in part:
            return None
        if part.startswith(b"data: "):
            out.append((end, part[6:]))
        elif part.startswith(b"data:"):
            out.append((end, part[5:]))
        else:
            return None
    return out


class BodyTap:
    """What the record takes of one response body; fed by the tee, finished by the writer.

    ``opaque``: a Content-Encoding the proxy cannot undo; the head is kept as received (with its header,
    so a replay can still serve it) and nothing is decoded.
    """

    def __init__(
        self,
        ex: Exchange,
        *,
        cap: int,
        event_limit: int,
        events: bool,
        forward_decoded: bool = False,
        marks: bool = True,
    ) -> None:
        self.ex = ex
        self.cap = cap
        self.event_limit = event_limit
        self.marks = marks
        self._fed = False  # the event decoder was given something
        # One growing buffer, not a list joined at the end: the join of 32 MiB would be one long step,
        # while appending costs a copy of each read as it comes (growth remaps pages, it does not copy).
        self.head = bytearray()
        self.total = 0  # decoded bytes that passed
        self.error: str | None = None
        self._pending: deque[tuple[float, bytes]] = deque()  # decoded, not yet given to the decoder
        self._pending_bytes = 0
        self._raw: deque[tuple[float, bytes]] = deque()  # received, not yet inflated
        self.inflater: _Inflater | _Spent | None = None
        self.opaque = False
        try:
            self.inflater = inflater(ex.response_headers.get("content-encoding"))
        except ValueError:
            self.opaque = True
        self.decoder: EventDecoder | None = None
        if events and not self.opaque:
            fold = family_for(ex.method, ex.path).stream_fold(min(cap, TEXT_LIMIT))
            self.decoder = EventDecoder(fold, event_limit)
        # The decoded bytes are what the client gets (the tee hides part of an encoded stream).
        self.out: list[bytes] | None = [] if forward_decoded and self.inflater is not None else None
        if marks:
            ex.stream_chunks = []

    def portable(self) -> dict[str, Any] | None:
        """The tap as plain data, when that says all of it (``restore`` rebuilds it); else None.

        That is: nothing decoded or inflated yet, and every read kept whole with its mark, so what waits
        for the decoder is the kept head cut at the marks (a short stream, a whole body: nearly all of
        them). The writer process gets the rest pickled (``__getstate__``).
        """
        if self.inflater is not None or self._raw or self._fed or self.out:
            return None
        head = self.head
        if self.decoder is not None and (
            not self.marks or self.total != len(head) or len(self._pending) != len(self.ex.stream_chunks)
        ):
            return None
        return {
            "cap": self.cap, "event_limit": self.event_limit, "events": self.decoder is not None,
            "marks": self.marks, "total": self.total, "error": self.error, "head": head,
        }  # fmt: skip

    @classmethod
    def restore(cls, ex: Exchange, state: dict[str, Any]) -> BodyTap:
        """The tap ``portable`` described, for ``ex`` as it was then (its read marks included)."""
        chunks = ex.stream_chunks
        tap = cls(ex, cap=state["cap"], event_limit=state["event_limit"], events=state["events"], marks=state["marks"])
        ex.stream_chunks = chunks
        tap.head = bytearray(state["head"])
        tap.total, tap.error = state["total"], state["error"]
        if tap.decoder is not None:
            head = state["head"]
            tap._pending.extend(split_marks(head, chunks))
            tap._pending_bytes = len(head)
        return tap

    def __getstate__(self) -> dict[str, object]:
        """The tap as it crosses to the writer process (``record.channel``): inflated to the end first."""
        # The tee inflates each read before the next one, so this is at most the last read's worth.
        while self._raw and self.inflater is not None:
            self._inflate_one()
        return self.__dict__

    @property
    def decoding(self) -> bool:
        """The body is content-encoded and being undone on its way."""
        return self.inflater is not None

    def feed(self, data: bytes) -> bool:
        """Take one network read; True when the tee should ``await catch_up()`` before the next one."""
        offset = self.ex.elapsed_ms()
        if self.ex.first_byte_ms is None:
            self.ex.first_byte_ms = offset
        return self.add(offset, data)

    def add(self, offset: float, data: bytes) -> bool:
        """``feed`` with the read's arrival time given (a recorded body taken again)."""
        if self.inflater is not None:
            self._raw.append((offset, data))
            return True
        if self._raw:  # the encoding broke off: what follows cannot be decoded
            return False
        self._take(offset, data)
        return self._pending_bytes > LAG

    def _take(self, offset: float, data: bytes) -> None:
        """A decoded piece: counted, kept while under the cap, queued for the event decoder."""
        self.total += len(data)
        head = self.head
        room = self.cap - len(head)
        if room > 0:
            head += data if len(data) <= room else data[:room]
            if self.marks:
                self.ex.stream_chunks.append((offset, len(head)))
        if self.decoder is not None:
            self._pending.append((offset, data))
            self._pending_bytes += len(data)
        if self.out is not None:
            self.out.append(data)

    async def catch_up(self) -> None:
        """Inflate everything received and decode down to ``LAG`` bytes, yielding to the loop between slices."""
        # On the serving loop: a yield after every slice, so the loop's longest step is one slice's work.
        await complete(self._work(LAG), every=0.0)

    async def drain(self) -> None:
        """Decode everything left (the writer, before ``finish``), yielding to the loop between slices."""
        await complete(self._work(0))

    def drain_steps(self) -> Generator[None, None, None]:
        """``drain`` as steps, for a caller that runs them itself (``record.slices.complete``, or in a thread)."""
        return self._work(0)

    @property
    def retained(self) -> int:
        """Bytes this tap holds: the kept head and what waits to be decoded (the recorder's byte bound)."""
        return len(self.head) + self._pending_bytes + sum(len(data) for _, data in self._raw)

    def _work(self, lag: int) -> Generator[None, None, None]:
        while self._step(lag):
            yield

    def take_out(self) -> bytes:
        """The decoded bytes since the last call (``forward_decoded``)."""
        out = self.out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def _step(self, lag: int) -> bool:
        """One slice of work; False when nothing is left above ``lag``."""
        if self._raw and self.inflater is not None:
            self._inflate_one()
            return True
        if self._pending_bytes <= lag or self.decoder is None:
            return False
        reads = []
        size = 0
        while self._pending and size < SLICE:
            offset, data = self._pending.popleft()
            room = SLICE - size
            if len(data) > max(room, SLICE >> 1):
                # A read larger than a slice (the tee takes a fast stream's reads whole, 256 KiB and more):
                # decoded a slice at a time too, cut at a blank line when there is one in reach.
                blank = data.rfind(b"\n\n", 0, room)
                cut = blank + 2 if blank > 0 else room
                self._pending.appendleft((offset, data[cut:]))
                data = data[:cut]
            reads.append((offset, data))
            size += len(data)
        self._pending_bytes -= size
        self._fed = True
        self.decoder.feed(reads)
        return True

    def _inflate_one(self) -> None:
        assert self.inflater is not None
        offset, data = self._raw.popleft()
        piece, rest = data[:INFLATE_INPUT], data[INFLATE_INPUT:]
        try:
            out = self.inflater.decompress(piece, SLICE)
        except zlib.error as exc:
            if out := self.inflater.salvage(piece, SLICE):
                self._take(offset, out)
            self._broken(str(exc))
            return
        if self.inflater.unconsumed_tail or rest:
            self._raw.appendleft((offset, self.inflater.unconsumed_tail + rest))
        if out:
            self._take(offset, out)

    def _broken(self, why: str) -> None:
        encoding = self.ex.response_headers.get("content-encoding", "")
        self.error = f"response {encoding} encoding broke off after {self.total} decoded bytes: {why}"
        self.inflater = None
        self._raw.append((0.0, b""))  # marks the rest undecodable (``add``)

    def all_came(self) -> bool:
        """The body's own framing says all of it passed: its compressed stream ended, or (identity, or a
        coding the proxy cannot undo) its declared length did. Without either, only the upstream's end of
        the body tells (``Ending.BODY_END``)."""
        if self.inflater is not None:
            return self.inflater.eof
        declared = self.ex.response_headers.get("content-length", "").strip()
        return self.error is None and declared.isdigit() and int(declared) == self.total

    def finish(self) -> Folded | None:
        """In the writer: decode what is left and fold it; the exchange gets the kept head and the counts.

        What is left is at most ``LAG`` bytes, or nothing after ``drain``.

        Returns the fold of an event stream; None for any other body (the caller folds the head whole).
        """
        while self._step(0):
            pass
        ex = self.ex
        if self.inflater is not None and not self.inflater.eof and ex.ending is Ending.BODY_END:
            self._broken("the body ended before its compressed stream did")
        ex.response_bytes = self.total
        head, self.head = self.head, bytearray()  # kept as the buffer it is: a copy would be one long step
        if self.inflater is not None or self.error is not None:
            ex.decoded_body, ex.response_body = head, b""
        else:
            ex.response_body = head
        if self.decoder is None:
            return None
        folded = self.decoder.fold.result()
        folded.decode_errors += self.decoder.dropped
        return folded
