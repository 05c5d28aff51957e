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
from typing import Any

from proxy.apis.chat.assemble import Assembler
from proxy.apis.chat.wire import CHUNK_DECODER, RESPONSE_DECODER, record_usage
from proxy.apis.codec import DECODE_ERRORS, JSON_ENCODER
from proxy.apis.sse import SSEParser
from proxy.record.exchange import Exchange
from proxy.record.outcome import settle

MAX_ERROR_CHARS = 500


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


def error_message(error: Any) -> str:
    if isinstance(error, dict):
        msg = error.get("message") or error.get("code") or error
        return str(msg)[:MAX_ERROR_CHARS]
    return str(error)[:MAX_ERROR_CHARS]


def finalize(ex: Exchange) -> Exchange:
    """Fill usage, model, finish reason, TTFT and the assembled response from the raw bytes; settle the outcome."""
    try:
        if ex.stream and is_event_stream(ex.response_headers):
            _finalize_stream(ex)
        else:
            _finalize_body(ex)
    except Exception as exc:  # noqa: BLE001 - the record must survive any upstream garbage
        ex.decode_errors += 1
        ex.error = ex.error or f"decode failed: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        settle(ex, complete_at=len(ex.response_body))
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


def _events_with_offsets(ex: Exchange) -> Iterator[tuple[float, int, bytes | str]]:
    """Each event's data with the offset (ms) of the read that completed it and its end in the body."""
    simple = simple_events(ex.response_body)
    if simple is None:
        parser = SSEParser()
        for offset, data in iter_reads(ex):
            for event in parser.feed(data):
                yield offset, event.end, event.data
        return
    ends = [end for _, end in ex.stream_chunks]
    offsets = [offset for offset, _ in ex.stream_chunks]
    for end, data in simple:
        # The event is complete at its last byte: in the first read that reaches ``end``.
        i = bisect_left(ends, end)
        yield (offsets[i] if i < len(offsets) else (ex.duration_ms or 0.0)), end, data


def _finalize_stream(ex: Exchange) -> None:
    asm = Assembler()
    complete_at: int | None = None  # the end of [DONE], or of the event that finished the last choice
    for offset, end, data in _events_with_offsets(ex):
        ex.event_count += 1
        if data == "[DONE]" or data == b"[DONE]":
            complete_at = end if complete_at is None else complete_at
            continue
        try:
            chunk = CHUNK_DECODER.decode(data)
        except DECODE_ERRORS:
            ex.decode_errors += 1
            continue
        asm.add(chunk)
        if ex.ttft_ms is None and asm.has_output:
            ex.ttft_ms = offset
        if complete_at is None and asm.all_finished:
            complete_at = end
    ex.usage = record_usage(asm.usage)
    ex.provider_cost = asm.usage.cost if asm.usage is not None else None
    ex.returned_model = asm.model
    ex.finish_reason = asm.finish_reason
    if asm.chunks:
        ex.assembled = JSON_ENCODER.encode(asm.result())
    settle(
        ex,
        complete_at=complete_at,
        body_error=error_message(asm.error) if asm.error is not None else None,
        error_event=asm.error is not None,
        unfinished="stream ended without [DONE] or a finish_reason",
    )


def _finalize_body(ex: Exchange) -> None:
    encoding = ex.response_headers.get("content-encoding")
    body = ex.response_body
    if encoding and body:
        body = ex.decoded_body = decompress(body, encoding)
    error = _read_body(ex, body)
    settle(ex, complete_at=len(ex.response_body), body_error=error)


def _read_body(ex: Exchange, body: bytes) -> str | None:
    """Usage, model and finish reason of a JSON body; returns the error message it carries, if any."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        view = RESPONSE_DECODER.decode(body)
    except DECODE_ERRORS:
        ex.decode_errors += 1
        return None
    ex.usage = record_usage(view.usage)
    ex.provider_cost = view.usage.cost if view.usage is not None else None
    ex.returned_model = view.model
    if view.choices:
        ex.finish_reason = view.choices[0].finish_reason
    return error_message(view.error) if view.error is not None else None
