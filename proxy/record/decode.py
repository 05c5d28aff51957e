"""Derive the record's fields from the raw bytes of a finished exchange.

Invariants:
- Runs after the client has its response (in the recorder's writer task), never on the hot path, so a
  slow or failing decode cannot delay or break a client's stream.
- Never raises on what an upstream sent: a chunk that fails to decode is counted in ``decode_errors``
  and skipped; an undecodable body leaves the derived fields empty.
- Token counts are only ever what the provider reported; when nothing was reported they stay NULL
  (``UsageSource.MISSING``), never 0.
- The raw ``response_body`` is left as received; a decoded copy goes beside it (``decoded_body``).
- Outcome and final status are not decided here but handed to ``record.outcome.settle`` with what the
  body says: where it was complete, and any error it carried.
"""

from __future__ import annotations

import gzip
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from proxy.apis.errors import MAX_ERROR_CHARS
from proxy.apis.families import family_for
from proxy.apis.family import Event
from proxy.apis.sse import SSEParser
from proxy.record.exchange import Exchange
from proxy.record.outcome import settle


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Undo a Content-Encoding for the record's copy; unknown codings raise ValueError."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if enc == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    if enc == "br":
        import brotli  # type: ignore[import-not-found]  # optional, as in aiohttp

        return brotli.decompress(body)
    raise ValueError(f"unsupported content-encoding {enc!r}")


def is_event_stream(headers: dict[str, str]) -> bool:
    return headers.get("content-type", "").lower().startswith("text/event-stream")


def iter_reads(ex: Exchange) -> Iterator[tuple[float, bytes]]:
    """The stream's network reads as ``(offset_ms, bytes)``, in order."""
    return split_reads(ex.response_body, ex.stream_chunks, ex.duration_ms)


def split_reads(
    body: bytes, chunks: Iterable[tuple[float, int]], tail_offset: float | None
) -> Iterator[tuple[float, bytes]]:
    """Cut a stored stream back into its network reads; bytes past the last mark come at ``tail_offset``."""
    start = 0
    for offset, end in chunks:
        yield offset, body[start:end]
        start = end
    if start < len(body):
        yield (tail_offset or 0.0), body[start:]


def finalize(ex: Exchange) -> Exchange:
    """Fold the body with the exchange's API family into the derived fields; settle the outcome."""
    family = family_for(ex.method, ex.path)
    try:
        if ex.stream and is_event_stream(ex.response_headers):
            folded = family.fold_stream(events(ex))
        else:
            body = ex.response_body
            encoding = ex.response_headers.get("content-encoding")
            if encoding and body:
                body = ex.decoded_body = decompress(body, encoding)
            folded = family.fold_body(body)
            folded.complete_at = len(ex.response_body)  # a body that arrived whole is whole
    except Exception as exc:  # noqa: BLE001 - the record must survive any upstream garbage
        ex.decode_errors += 1
        ex.error = ex.error or f"decode failed: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        settle(ex, complete_at=len(ex.response_body))
        return ex
    ex.usage, ex.provider_cost = folded.usage, folded.provider_cost
    ex.returned_model, ex.finish_reason, ex.ttft_ms = folded.model, folded.finish_reason, folded.ttft_ms
    ex.assembled, ex.event_count, ex.decode_errors = folded.assembled, folded.events, folded.decode_errors
    settle(
        ex,
        complete_at=folded.complete_at,
        body_error=folded.error,
        error_event=folded.error_event,
        unfinished=f"stream ended without {family.end_marker}",
    )
    return ex


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


def events(ex: Exchange) -> Iterator[Event]:
    """The stream's events, each with the offset (ms) of the read that completed it and its end in the body."""
    simple = simple_events(ex.response_body)
    if simple is None:
        parser = SSEParser()
        for offset, data in iter_reads(ex):
            for event in parser.feed(data):
                yield Event(offset, event.end, event.event, event.data)
        return
    ends = [end for _, end in ex.stream_chunks]
    offsets = [offset for offset, _ in ex.stream_chunks]
    for end, data in simple:
        # The event is complete at its last byte: in the first read that reaches ``end``.
        i = bisect_left(ends, end)
        yield Event(offsets[i] if i < len(offsets) else (ex.duration_ms or 0.0), end, "", data)
