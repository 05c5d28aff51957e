"""Derive the record's fields from the body of a finished exchange.

Invariants:
- Runs after the client has its response (in the recorder's writer task), never on the hot path, so a
  slow or failing decode cannot delay or break a client's stream. A long stream was already folded
  as it passed (``record.tap``); what is left here is bounded (``tap.LAG``).
- Never raises on what an upstream sent: a chunk that fails to decode is counted in ``decode_errors``
  and skipped; an undecodable body leaves the derived fields empty.
- Token counts are only ever what the provider reported; when nothing was reported they stay NULL
  (``UsageSource.MISSING``), never 0.
- The kept ``response_body`` is as received; an encoded one is kept decoded instead (``decoded_body``).
- Outcome and final status are not decided here but handed to ``record.outcome.settle`` with what the
  body says: where it was complete, and any error it carried.
- A body whose only end marker is its end (anything but an event stream of a family with an end event:
  JSON, text, a plain family's events) was complete only if all of it came: the upstream ended it
  (``Ending.BODY_END``), or its own framing says so (its declared length, its compressed stream's end).
  One the client or the upstream left before that is never complete, however much of it was passed on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from proxy.apis.errors import MAX_ERROR_CHARS
from proxy.apis.families import family_for
from proxy.apis.family import NO_TEXT_LIMIT
from proxy.record.exchange import Ending, Exchange
from proxy.record.outcome import settle
from proxy.record.tap import BodyTap, split_marks


def is_event_stream(headers: dict[str, str]) -> bool:
    return headers.get("content-type", "").lower().startswith("text/event-stream")


def iter_reads(ex: Exchange) -> Iterator[tuple[float, bytes]]:
    """The stream's network reads as ``(offset_ms, bytes)``, in order."""
    return split_reads(ex.response_body, ex.stream_chunks, ex.duration_ms)


def split_reads(
    body: bytes, chunks: Iterable[tuple[float, int]], tail_offset: float | None
) -> Iterator[tuple[float, bytes]]:
    """Cut a stored stream back into its network reads; bytes past the last mark come at ``tail_offset``."""
    chunks = list(chunks)
    yield from split_marks(body, chunks)
    start = chunks[-1][1] if chunks else 0
    if start < len(body):
        yield (tail_offset or 0.0), body[start:]


def finalize(ex: Exchange) -> Exchange:
    """Fold the body with the exchange's API family into the derived fields; settle the outcome.

    A body the tee tapped (``ex.body_tap``) was folded as it passed: only its last part is decoded
    here. Any other exchange (built by a test, a benchmark, an error the proxy answered itself) is taken
    through a tap now, from its kept body and read marks, without a cap.
    """
    family = family_for(ex.method, ex.path)
    tap = None
    try:
        tap = ex.body_tap if ex.body_tap is not None else _retake(ex)
        ex.body_tap = None  # the tap holds live state; the record must not carry it further (spool)
        folded = tap.finish()
        if folded is None:
            folded = family.fold_body(ex.decoded_body if ex.decoded_body is not None else ex.response_body)
            folded.complete_at = _whole_at(ex, tap)
        elif not family.end_event and _whole_at(ex, tap) is None:
            folded.complete_at = None  # its last event is no end marker
        if tap.error is not None:
            ex.error = ex.error or tap.error
    except Exception as exc:  # noqa: BLE001 - the record must survive any upstream garbage
        ex.body_tap = None
        ex.decode_errors += 1
        ex.error = ex.error or f"decode failed: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        settle(ex, complete_at=_whole_at(ex, tap))
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


def _whole_at(ex: Exchange, tap: BodyTap | None) -> int | None:
    """The end of a body whose end is its end marker, if all of it came; None when that is not known."""
    if ex.ending is Ending.BODY_END or (tap is not None and tap.all_came()):
        return ex.response_bytes or len(ex.response_body)
    return None


def _retake(ex: Exchange) -> BodyTap:
    """A tap over a body that was kept whole, with its read marks (no cap: it is already in memory)."""
    tap = BodyTap(ex, cap=NO_TEXT_LIMIT, event_limit=NO_TEXT_LIMIT, events=is_stream_body(ex), marks=False)
    for offset, data in iter_reads(ex):
        tap.add(offset, data)
    return tap


def is_stream_body(ex: Exchange) -> bool:
    """The response is an event stream, folded event by event (anything else is folded whole)."""
    return ex.stream and is_event_stream(ex.response_headers)
