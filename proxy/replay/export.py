"""Recordings as files: a versioned, readable JSONL export of a session, and its import into any database.

Invariants:
- Line 1 is a header (``format``, ``version``, session, count); then one exchange a line, ordered by
  ``started_at`` then id, each with its fields in one fixed order, so exporting twice gives the same file.
- Nothing secret is written: headers that carry credentials (or were stored redacted) are left out, and
  so is the key fingerprint.
- Bytes survive the round trip exactly: a response body is embedded as JSON when it is one line of valid
  JSON (the bytes themselves, not a re-encoding), else as text, else as base64; a stream is written as
  its network reads with their offsets, each read cut into its events (same offset) for reading. So
  export, import, replay gives byte-identical streams with the recorded timing.
- Requests are written canonically (parsed, keys sorted, compact): the form the match key reads.
- A file of a newer ``version`` than this code knows is refused with a clear message.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.apis.codec import DECODE_ERRORS
from proxy.record.decode import split_reads
from proxy.record.exchange import new_exchange_id, utcnow
from proxy.record.redact import REDACTED, SECRET_HEADERS
from proxy.replay.matchkey import KeyRules, match_key
from proxy.store import recordings
from proxy.store.stored import ExchangeFields, Stored, StoredBody, rows
from proxy.store.writes import insert_rows

FORMAT = "llm-recording-proxy/exchanges"
VERSION = 1
_ENCODER = msgspec.json.Encoder()
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_ANY = msgspec.json.Decoder()


class ExportError(Exception):
    """A file that cannot be imported, with the line that says why."""


class Header(msgspec.Struct, kw_only=True):
    format: str = FORMAT
    version: int = VERSION
    session: str | None = None
    exchanges: int = 0
    exported_at: datetime | None = None


class Body(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Exactly one of the body forms is set; none when the body was not stored."""

    json: msgspec.Raw = msgspec.Raw(b"")
    text: str | None = None
    base64: str | None = None
    # A stream: one [offset_ms, text] per network read (``reads_base64`` when a read is not UTF-8).
    reads: list[tuple[float, str]] | None = None
    reads_base64: list[tuple[float, str]] | None = None


class Message(msgspec.Struct, kw_only=True):
    headers: dict[str, str] = {}
    body: Body | None = None


class Record(ExchangeFields, kw_only=True):
    """One exported exchange: its columns (less the key fingerprint and match key) and its bodies as text."""

    request: Message = msgspec.field(default_factory=Message)
    response: Message = msgspec.field(default_factory=Message)
    assembled: msgspec.Raw = msgspec.Raw(b"null")
    usage_injected: bool = False
    event_count: int = 0
    decode_errors: int = 0
    delivered_bytes: int | None = None  # of the response, what the client got when it left early


SHARED = ExchangeFields.__struct_fields__
_HEADER_DECODER = msgspec.json.Decoder(Header)
_RECORD_DECODER = msgspec.json.Decoder(Record)


def _public_headers(headers: dict[str, Any] | None) -> dict[str, str]:
    return {k: str(v) for k, v in sorted((headers or {}).items()) if k not in SECRET_HEADERS and v != REDACTED}


def _decodes(data: bytes) -> bool:
    if not data.strip():
        return False
    try:
        _ANY.decode(data)
    except DECODE_ERRORS:
        return False
    return True


def _body(data: bytes | None, *, canonical: bool = False) -> Body | None:
    if data is None:
        return None
    if _decodes(data) and (canonical or not (b"\n" in data or b"\r" in data)):
        # Canonical: parsed and re-encoded with sorted keys. Otherwise the bytes themselves, on one line.
        return Body(json=msgspec.Raw(msgspec.json.encode(_ANY.decode(data), order="sorted") if canonical else data))
    try:
        return Body(text=data.decode("utf-8"))
    except UnicodeDecodeError:
        return Body(base64=base64.b64encode(data).decode())


def _events(data: bytes) -> list[bytes]:
    """A read cut after each blank line, so every event gets its own line of the file."""
    pieces, start = [], 0
    for match in _EVENT_END.finditer(data):
        pieces.append(data[start : match.end()])
        start = match.end()
    if start < len(data):
        pieces.append(data[start:])
    return pieces


def _stream_body(data: bytes, chunks: Iterable[Any], tail: float | None) -> Body:
    # One entry per event within a read, all at the read's offset: the same bytes at the same moments.
    reads = [
        (round(float(o), 3), piece)
        for o, part in split_reads(data, [(o, e) for o, e in chunks], tail)
        for piece in _events(part)
    ]
    try:
        return Body(reads=[(o, part.decode("utf-8")) for o, part in reads])
    except UnicodeDecodeError:
        return Body(reads_base64=[(o, base64.b64encode(part).decode()) for o, part in reads])


def to_record(stored: Stored) -> Record:
    """One stored exchange (with its bodies) as an export record."""
    body = stored.body or StoredBody()
    response = body.response_body
    is_stream = bool(body.stream_chunks) and response is not None
    response_body = _stream_body(response, body.stream_chunks, stored.duration_ms) if is_stream else _body(response)
    return Record(
        **{name: getattr(stored, name) for name in SHARED},
        request=Message(headers=_public_headers(body.request_headers), body=_body(body.request_body, canonical=True)),
        response=Message(headers=_public_headers(body.response_headers), body=response_body),
        assembled=msgspec.Raw(body.assembled.encode()) if body.assembled else msgspec.Raw(b"null"),
        usage_injected=body.usage_injected,
        event_count=body.event_count,
        decode_errors=body.decode_errors,
        delivered_bytes=body.delivered_bytes,
    )


async def session_records(engine: AsyncEngine, session_id: str) -> list[Record]:
    return [to_record(r) for r in await recordings.session_exchanges(engine, session_id)]


def jsonl(session_id: str, records: list[Record]) -> bytes:
    header = Header(session=session_id, exchanges=len(records), exported_at=utcnow())
    return b"".join(_ENCODER.encode(item) + b"\n" for item in (header, *records))


def read_records(lines: Iterable[bytes]) -> Iterator[Record]:
    """Parse an export file; raises ExportError naming the line for anything wrong."""
    it = iter(enumerate(lines, 1))
    try:
        _, first = next(it)
    except StopIteration:
        raise ExportError("empty file") from None
    try:
        header = _HEADER_DECODER.decode(first)
    except DECODE_ERRORS as exc:
        raise ExportError(f"line 1: not an export header: {exc}") from None
    if header.format != FORMAT:
        raise ExportError(f"line 1: format {header.format!r} is not {FORMAT!r}")
    if header.version > VERSION:
        raise ExportError(f"line 1: version {header.version} was written by a newer proxy (this one reads {VERSION})")
    for number, line in it:
        if not line.strip():
            continue
        try:
            yield _RECORD_DECODER.decode(line)
        except DECODE_ERRORS as exc:
            raise ExportError(f"line {number}: {exc}") from None


def restore_body(body: Body | None) -> tuple[bytes | None, list[list[float]] | None]:
    """Bytes and ``stream_chunks`` ([offset, end] per read) from an exported body."""
    if body is None:
        return None, None
    if body.reads is not None or body.reads_base64 is not None:
        if body.reads is not None:
            parts = [(o, t.encode("utf-8")) for o, t in body.reads]
        else:
            parts = [(o, base64.b64decode(t)) for o, t in body.reads_base64 or ()]
        marks, end = [], 0
        for offset, data in parts:
            end += len(data)
            marks.append([offset, end])
        return b"".join(d for _, d in parts), marks
    if bytes(body.json):
        return bytes(body.json), None
    if body.text is not None:
        return body.text.encode("utf-8"), None
    if body.base64 is not None:
        return base64.b64decode(body.base64), None
    return b"", None


def to_stored(record: Record, rules: KeyRules, session: str | None) -> Stored:
    """An export record as the exchange it was, keyed for replay under ``rules``."""
    request_body, _ = restore_body(record.request.body)
    response_body, chunks = restore_body(record.response.body)
    assembled = bytes(record.assembled)
    key = None if request_body is None else match_key(record.method, record.path, request_body, rules, record.upstream)
    stored = Stored(
        **{name: getattr(record, name) for name in SHARED},
        key_fingerprint=None,
        match_key=key,
        body=StoredBody(
            request_headers=record.request.headers,
            request_body=request_body,
            response_headers=record.response.headers,
            response_body=response_body,
            assembled=assembled.decode() if assembled and assembled != b"null" else None,
            stream_chunks=[(float(o), int(e)) for o, e in chunks or ()],
            event_count=record.event_count,
            decode_errors=record.decode_errors,
            usage_injected=record.usage_injected,
            delivered_bytes=record.delivered_bytes,
        ),
    )
    if session is not None:
        stored.session_id = session
    return stored


async def import_records(
    engine: AsyncEngine, records: Iterable[Record], rules: KeyRules, session: str | None = None
) -> tuple[int, int]:
    """Insert the records; with ``session`` they go into that session under new ids. Returns (new, skipped)."""
    pairs = []
    for record in records:
        if session is not None:
            record = msgspec.structs.replace(record, id=new_exchange_id())
        pairs.append(rows(to_stored(record, rules, session)))
    if not pairs:
        return 0, 0
    existing = await recordings.existing_ids(engine, [e["id"] for e, _ in pairs])
    fresh = [(e, b) for e, b in pairs if e["id"] not in existing]
    async with engine.begin() as conn:
        for start in range(0, len(fresh), 500):
            batch = fresh[start : start + 500]
            await insert_rows(conn, [e for e, _ in batch], [b for _, b in batch if b is not None])
    return len(fresh), len(pairs) - len(fresh)
