"""The usage option: how the proxy gets exact usage for every chat stream, and hides what it asked for.

Invariants:
- When a streamed request did not ask for ``stream_options.include_usage``, the proxy adds it
  (``inject_usage``) so the stream is recorded with the provider's own token counts, and
  ``UsageChunkFilter`` holds back the usage-only chunk that client never asked for: a chunk carrying
  ``usage`` and no content, with ``choices: []`` (OpenAI) or choices whose deltas (legacy: texts) are all
  empty with no finish reason (LiteLLM's proxy, for chat and legacy completions).
- The filter forwards whole events (a client cannot use half an event anyway); comment lines
  (keep-alives) still pass at once. A read made of whole events in which every ``"usage"`` is null
  (nearly every read of a stream) is forwarded as it is, without parsing: it cannot hold the usage chunk.
"""

from __future__ import annotations

import re

from proxy.apis.chat.wire import USAGE_PROBE_DECODER
from proxy.apis.codec import ANY_DECODER, DECODE_ERRORS, JSON_ENCODER
from proxy.apis.sse import SSEParser

_LINE_END = re.compile(rb"\r\n|\r|\n")
_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
_NULL_USAGE_STR = re.compile(_NULL_USAGE.pattern.decode())  # the same test on an event's decoded text
_USAGE_OPTION = b',"stream_options":{"include_usage":true}}'
REFUSAL_STATUSES = (400, 422)


def refuses_option(status: int, body: bytes) -> bool:
    """An upstream answer that rejects the option the proxy added (not the client's request)."""
    return status in REFUSAL_STATUSES and b"stream_options" in body


def inject_usage(body: bytes) -> bytes | None:
    """The body with ``stream_options.include_usage = true`` added, or None if it cannot be done.

    Only called for a body that decoded as a JSON object. Without any ``stream_options`` in it, the
    option is spliced in before the closing brace: the prompt (often most of the body) is neither
    decoded nor re-encoded, and the client's bytes stay as they were.
    """
    if b'"stream_options"' not in body:
        end = body.rstrip()
        if end.endswith(b"}"):
            return end[:-1] + _USAGE_OPTION
    try:
        obj = ANY_DECODER.decode(body)
    except DECODE_ERRORS:
        return None
    if not isinstance(obj, dict):
        return None
    options = obj.get("stream_options")
    obj["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    return JSON_ENCODER.encode(obj)


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
        if not self._buf and data.endswith(b"\n\n") and _no_usage_value(data, len(data)) and self._parser.skip(data):
            # ``_whole``'s usual case (whole events after whole events, none usage-only) without its searches:
            # it is every read of a typical stream, on the serving loop.
            self._base += len(data)
            return data
        if self._buf or not self._parser.at_boundary:
            # An unfinished event is held: only the bytes up to the first blank line need the parser to
            # finish it; the whole events after it can take the unparsed way (a read that split an event
            # would otherwise have the parser take all of the next read, 64 KiB in a fast stream).
            first = _first_blank_line_end(data)
            if not first or first == len(data):
                return self._parse(data)
            out = self._parse(data[:first])
            rest = data[first:]
            if self.passthrough:
                return out + rest
            return out + (self._parse(rest) if self._buf or not self._parser.at_boundary else self._whole(rest))
        return self._whole(data)

    def _whole(self, data: bytes) -> bytes:
        """``data`` fed between events, with nothing held."""
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

    @property
    def held(self) -> int:
        """Bytes fed but not yet passed on (an unfinished event)."""
        return len(self._buf)

    def close(self) -> bytes:
        """Whatever is left (an incomplete last event) goes out as sent."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def _last_blank_line_end(data: bytes) -> int:
    """Offset just past the last LF LF or CRLF CRLF in ``data``; 0 when there is none."""
    if data.endswith(b"\n\n"):  # a read of whole events, as nearly every read of a stream is
        return len(data)
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _first_blank_line_end(data: bytes) -> int:
    """Offset just past the first LF LF or CRLF CRLF in ``data``; 0 when there is none."""
    lf = data.find(b"\n\n")
    # A CRLF CRLF ending before that LF LF lies wholly before it: no need to search the rest.
    crlf = data.find(b"\r\n\r\n", 0, lf + 2 if lf >= 0 else len(data))
    return crlf + 4 if crlf >= 0 else lf + 2 if lf >= 0 else 0


def _no_usage_value(data: bytes, end: int) -> bool:
    """True when every ``"usage"`` in ``data[:end]`` is followed by null: no event there is usage-only."""
    n = data.count(b'"usage"', 0, end)
    # Written without spaces, as OpenAI and most servers write it, a count says it; else the pattern does.
    return not n or n == data.count(b'"usage":null', 0, end) or n == len(_NULL_USAGE.findall(data, 0, end))


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
