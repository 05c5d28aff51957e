"""The Exchange: one request/response pair as it flows forward -> tee -> decode -> record.

Invariants:
- Pure data, no I/O. The forwarder fills the request side and the raw response bytes with their arrival
  times; ``decode.finalize`` fills the derived fields (usage, model, finish reason, assembled response);
  the recorder stores it. Nothing else mutates it.
- Raw bytes are what the upstream sent (after HTTP de-chunking, before content decoding); they are never
  re-encoded. ``stream_chunks`` holds one ``(offset_ms, end_byte)`` pair per network read, so a replay
  can reproduce both the bytes and their timing.
- No secret is ever held here: headers are redacted and the API key is reduced to a keyed fingerprint
  before the Exchange is built.
"""

from __future__ import annotations

import enum
import os
import time
from datetime import UTC, datetime

import msgspec

from proxy.apis.chat.wire import Usage


class Outcome(enum.StrEnum):
    """How an exchange ended. Stored as text; one line per member is the whole contract."""

    COMPLETE = "complete"  # the full response reached the client
    CLIENT_DISCONNECTED = "client_disconnected"  # the client went away first; status 499
    UPSTREAM_CUT = "upstream_cut"  # the upstream closed or failed before the response was complete
    UPSTREAM_ERROR_EVENT = "upstream_error_event"  # the stream carried an `error` event (HTTP 200 failure)
    UPSTREAM_UNREACHABLE = "upstream_unreachable"  # could not connect; the client got 502
    UPSTREAM_TIMEOUT = "upstream_timeout"  # connect or idle read timeout; 504, or a cut stream
    REJECTED = "rejected"  # the proxy refused the request itself (size limit, bad route)


class UsageSource(enum.StrEnum):
    """Where the token counts came from."""

    PROVIDER = "provider"  # the upstream reported usage in the body or the stream
    MISSING = "missing"  # none reported; token columns are NULL, never 0


class CostSource(enum.StrEnum):
    """Where an exchange's cost came from (``pricing.price_exchange`` decides)."""

    PROVIDER = "provider"  # the upstream reported the charge itself (OpenRouter's usage.cost)
    COMPUTED = "computed"  # reported tokens x the price entry named in price_ref
    UNKNOWN = "unknown"  # possibly billed but unpriced: no price for the model, or no usage reported
    NONE = "none"  # nothing billed: no usage and the upstream never answered 2xx


_RANDOM = bytearray()
# A child process must not hand out its parent's buffered random bytes (the same ids in both).
os.register_at_fork(after_in_child=_RANDOM.clear)


def _random10() -> bytes:
    # One getrandom() call per 256 ids instead of one per id: a syscall is dear on the request path.
    if len(_RANDOM) < 10:
        _RANDOM[:] = os.urandom(2560)
    out = bytes(_RANDOM[-10:])
    del _RANDOM[-10:]
    return out


def new_exchange_id() -> str:
    """A UUIDv7 string: unique, and sorted by creation time so the primary key is time-ordered."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_random10(), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Exchange(msgspec.Struct, kw_only=True):
    id: str = msgspec.field(default_factory=new_exchange_id)
    session_id: str | None = None
    upstream: str = "default"
    started_at: datetime = msgspec.field(default_factory=utcnow)
    # perf_counter() at arrival; offsets below are measured from it.
    t0: float = msgspec.field(default_factory=time.perf_counter)

    # request
    method: str = "GET"
    path: str = ""
    query: str = ""
    request_headers: dict[str, str] = {}
    request_body: bytes = b""
    key_fingerprint: str | None = None
    requested_model: str | None = None
    user: str | None = None
    stream: bool = False
    # True when the proxy added stream_options.include_usage the client did not ask for.
    usage_injected: bool = False
    store_bodies: bool = True

    # response, as received
    status: int | None = None
    upstream_status: int | None = None
    response_headers: dict[str, str] = {}
    response_body: bytes = b""
    stream_chunks: list[tuple[float, int]] = []
    first_byte_ms: float | None = None
    duration_ms: float | None = None
    finished_at: datetime | None = None
    outcome: Outcome = Outcome.COMPLETE
    error: str | None = None

    # derived by decode.finalize
    returned_model: str | None = None
    finish_reason: str | None = None
    ttft_ms: float | None = None
    usage: Usage | None = None
    usage_source: UsageSource = UsageSource.MISSING
    assembled: bytes | None = None
    event_count: int = 0
    decode_errors: int = 0

    # replay: the request's match key (set in the writer), and whether a recording answered it (then
    # nothing is recorded: a replay must not add to the recordings it plays)
    match_key: str | None = None
    replayed: bool = False
    # derived by pricing.PriceTable.apply, in the writer; NULL cost is never stored as 0
    cost_usd: float | None = None
    cost_source: CostSource | None = None
    price_ref: str | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000.0

    def add_chunk(self, data: bytes, end: int) -> float:
        """Note one network read of a stream; returns its offset in ms."""
        offset = self.elapsed_ms()
        if self.first_byte_ms is None:
            self.first_byte_ms = offset
        self.stream_chunks.append((offset, end))
        return offset

    def finish(self, outcome: Outcome | None = None, error: str | None = None) -> None:
        """Close the exchange once; a later call keeps the first outcome (the cause, not the symptom)."""
        if self.finished_at is not None:
            return
        if outcome is not None:
            self.outcome = outcome
        if error is not None:
            self.error = error
        self.duration_ms = self.elapsed_ms()
        self.finished_at = utcnow()
