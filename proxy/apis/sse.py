"""Incremental Server-Sent Events parser over raw bytes (WHATWG HTML "server-sent events" rules).

Feed the response body in whatever pieces the network delivers; ``SSEParser.feed`` returns the events
that those bytes completed. Pure Python, no I/O, stdlib only.

Invariants:
- The result never depends on how the stream was split into ``feed`` calls, except for ``SSEEvent.end``
  in one documented case: when a CRLF-terminated blank line has its CR at the end of one feed and its
  LF at the start of the next, the event is dispatched on the CR (the parser never waits for a byte
  that may never come) and its ``end`` points just past the CR rather than past the LF.
- Lines end at CRLF, LF or CR, and only there. A lone CR at the end of a feed is a line end at once; a
  LF that starts the next feed is then skipped as the second half of that CRLF.
- Only complete lines are decoded (UTF-8, ``errors="replace"``), so a multi-byte character split across
  feeds decodes intact. Because CR, LF, ':' and space are ASCII and UTF-8 never uses ASCII bytes inside
  a multi-byte sequence, parsing the bytes and decoding per field gives exactly what decoding the whole
  stream first and then parsing would.
- One UTF-8 BOM at the very start of the stream is stripped, even when it arrives split across feeds.
  It still counts towards ``consumed`` and the ``end`` offsets, which are offsets into the raw stream.
- An event is dispatched by a blank line only if at least one ``data`` field was seen; a blank line
  resets all per-event state (data, event type and id) either way. An incomplete event at end of stream
  is discarded, as the spec requires.
- Memory and time are linear in the input: a long line arriving in many small reads is buffered as a
  list of pieces and joined once, when its line end arrives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import repeat
from typing import NamedTuple

__all__ = ["SSEEvent", "SSEParser"]

_BOM = b"\xef\xbb\xbf"
_BLANK_LINE_ENDS = (b"\n\n", b"\r\n\r\n")
# ``\r\n?`` is greedy, so a CRLF counts as one line end, not two. The group makes split() keep
# the terminators, whose lengths give the absolute offsets.
_EOL = re.compile(rb"(\r\n?|\n)")


class SSEEvent(NamedTuple):
    """One dispatched event."""

    data: str
    """The ``data`` field values joined with "\\n" (no trailing newline)."""
    event: str
    """The raw ``event`` field value; "" when absent (the spec's default "message" is not applied)."""
    id: str | None
    """The last ``id`` field value of this event (values containing NUL are ignored); None if none."""
    end: int
    """Absolute offset into the raw stream just past the terminator of the blank line that dispatched
    the event (just past its CR only in the split-CRLF case described in the module docstring)."""


# NamedTuple's generated __new__ is a Python-level function; building the tuple directly (as the
# generated ``_make`` does) saves a frame per event on the hot path.
_new_tuple = tuple.__new__


class SSEParser:
    """Incremental SSE parser; see the module docstring for the exact rules."""

    __slots__ = (
        "_between",
        "_bom_pending",
        "_data",
        "_event",
        "_id",
        "_last_end",
        "_skip_lf",
        "_tail",
        "_tail_len",
        "comments",
        "consumed",
    )

    def __init__(self) -> None:
        self.comments: int = 0
        """Comment lines (starting with ':') seen so far, e.g. OpenRouter's ": OPENROUTER PROCESSING"."""
        self.consumed: int = 0
        """Total bytes fed so far."""
        self._last_end = 0
        self._bom_pending = True
        # True only while ``at_boundary`` is known to hold (set by a ``skip`` that consumed): ``feed`` is the
        # only method that can leave an event unfinished, so it clears it.
        self._between = False
        self._skip_lf = False
        # Pieces of the current incomplete line; none of them contains CR or LF.
        self._tail: list[bytes] = []
        self._tail_len = 0
        self._data: list[bytes] = []
        self._event = b""
        self._id: bytes | None = None

    @property
    def pending(self) -> int:
        """Bytes fed that belong to no dispatched event yet (``consumed`` minus the last event's end)."""
        return self.consumed - self._last_end

    @property
    def at_boundary(self) -> bool:
        """Between events: no partial line, no field of a next event, no CR waiting for its LF."""
        if self._between:
            return True
        return not (self._tail or self._data or self._event or self._id is not None or self._skip_lf) and (
            not self._bom_pending
        )

    def skip(self, data: bytes) -> bool:
        """Count ``data`` as consumed without parsing it, if parsing it could change nothing after it.

        That holds when the parser is ``at_boundary`` (or has seen nothing yet) and ``data`` ends with
        a blank line (LF LF or CRLF CRLF): whatever events ``data`` holds, the parser ends up between
        events again. The events are not returned and their comments are not counted; ``pending`` is 0
        afterwards. Returns False, having done nothing, when the condition does not hold (the caller
        then feeds ``data``).
        """
        if not data.endswith(_BLANK_LINE_ENDS):
            return False
        if not self._between:
            # A fresh parser is between events too, once ``data`` shows the stream opens without a BOM.
            fresh = self._bom_pending and not self._tail and not self.consumed and not data.startswith(_BOM[:1])
            if not (fresh or self.at_boundary):
                return False
            self._bom_pending = False
            self._between = True  # until the next ``feed``: a stream skipped read after read is checked once
        self.consumed += len(data)
        self._last_end = self.consumed
        return True

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Consume the next piece of the stream; return the events it completed (possibly none)."""
        if not data:
            return []
        self._between = False
        start = self.consumed  # absolute offset of data[0]
        self.consumed += len(data)

        if self._skip_lf:
            self._skip_lf = False
            if data[0] == 0x0A:
                # The LF completes a CRLF whose CR already ended a line. If that line dispatched an
                # event, the LF belongs to it, so it must not show up in ``pending``.
                if self._last_end == start:
                    self._last_end += 1
                data = data[1:]
                start += 1
                if not data:
                    return []

        if self._bom_pending:
            data, start = self._after_bom(data, start)
            if not data:
                return []

        has_cr = b"\r" in data
        if not has_cr and b"\n" not in data:
            self._tail.append(data)
            self._tail_len += len(data)
            return []
        if self._tail:
            # The buffered pieces have no line end, so a CRLF can't straddle them and ``data``.
            self._tail.append(data)
            data = b"".join(self._tail)
            start -= self._tail_len
            self._tail.clear()
            self._tail_len = 0

        if not has_cr:
            # Almost every real stream is LF-only, and bytes.split is much faster than a regex.
            lines = data.split(b"\n")
            rest = lines.pop()
            events = self._lines(lines, repeat(1), start)
        else:
            # With a capturing group, split alternates line, terminator, line, ..., rest.
            parts = _EOL.split(data)
            rest = parts.pop()
            events = self._lines(parts[::2], map(len, parts[1::2]), start)
            # A CR at the very end was taken as a line end (the regex can't see a LF that hasn't
            # arrived yet); remember to swallow a LF that opens the next feed.
            self._skip_lf = data.endswith(b"\r")
        if rest:
            self._tail.append(rest)
            self._tail_len = len(rest)
        return events

    def _after_bom(self, data: bytes, start: int) -> tuple[bytes, int]:
        """The bytes after a leading BOM, and their offset; nothing while a BOM prefix is held back."""
        # Until three bytes are in, a BOM prefix can't be told from the start of a line. Only a
        # BOM prefix (at most 2 bytes) is ever held back here, so the join is cheap.
        if self._tail:
            start -= self._tail_len
            data = b"".join(self._tail) + data
            self._tail.clear()
            self._tail_len = 0
        if len(data) < 3 and _BOM.startswith(data):
            self._tail.append(data)
            self._tail_len = len(data)
            return b"", start
        self._bom_pending = False
        if data.startswith(_BOM):
            return data[3:], start + 3
        return data, start

    def close(self) -> list[SSEEvent]:
        """Signal end of stream. Per the spec an incomplete event is discarded, so this returns [].

        Events whose blank line ended in a lone CR were already returned by ``feed``. The discarded
        bytes stay counted in ``pending``.
        """
        self._tail.clear()
        self._tail_len = 0
        self._bom_pending = False
        self._skip_lf = False
        self._reset_event()
        return []

    def drop(self) -> None:
        """Forget the unfinished event (a line or event too large to hold); ``pending`` is 0 afterwards.

        The rest of a dropped line, when it comes, reads as a field of no known name and is ignored.
        """
        self.close()
        self._last_end = self.consumed

    def _field(self, line: bytes) -> None:
        """Apply one non-empty line (a field or a comment) to the current event."""
        colon = line.find(b":")
        if colon == 0:
            self.comments += 1
            return
        if colon < 0:
            name = line
            value = b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":  # only a bare "data" line gets here; "data:..." is handled in _lines
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id" and b"\0" not in value:
            self._id = value
        # "retry" only matters to a reconnecting client; it and unknown fields are ignored.

    def _lines(self, lines: list[bytes], term_lens: Iterable[int], start: int) -> list[SSEEvent]:
        """Apply complete lines and return the events they dispatch.

        ``term_lens`` gives each line's terminator length and ``start`` the absolute offset of the
        first line. This is the hot loop, so the common cases (data line, blank line) are inlined
        rather than delegated to ``_field``.
        """
        events: list[SSEEvent] = []
        data = self._data
        end = start
        for line, term_len in zip(lines, term_lens, strict=False):  # term_lens may be endless
            end += len(line) + term_len
            if not line:
                if data:
                    # A one-line value needs no join. Joining before decoding equals decoding each
                    # line: LF never sits inside a UTF-8 sequence, so errors="replace" can't eat it.
                    value = data[0] if len(data) == 1 else b"\n".join(data)
                    ev = self._event
                    eid = self._id
                    events.append(
                        _new_tuple(
                            SSEEvent,
                            (
                                value.decode("utf-8", "replace"),
                                ev.decode("utf-8", "replace") if ev else "",
                                None if eid is None else eid.decode("utf-8", "replace"),
                                end,
                            ),
                        )
                    )
                    self._last_end = end
                    data = self._data = []
                self._event = b""
                self._id = None
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            else:
                self._field(line)
        return events

    def _reset_event(self) -> None:
        if self._data:
            self._data = []
        self._event = b""
        self._id = None
