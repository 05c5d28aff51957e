"""The Exchange: one request/response pair as it flows forward -> tee -> decode -> record.

Invariants:
- Pure data, no I/O. Each step fills its own fields, in this order, and no other step writes them:
  the live path (``forward.handler``, ``forward.tee``) the request side, the response status, headers
  and raw bytes with their arrival times, how far the client got (``delivered``) and how the bytes ended
  (``ending``); in the writer, ``record.decode.finalize`` the derived fields (usage, model, finish reason,
  TTFT, assembled response, decoded body) and, from ``ending`` and the body, the ``outcome`` and final
  ``status`` (``record.outcome.settle``: the one place they are decided); ``usage.pricing`` the cost;
  ``replay.matchkey`` the match key (at replay time, or in the writer). The recorder then masks secrets
  in the bodies in place (same length, so byte offsets stay valid) and stores the result.
- ``response_body`` is what the upstream sent (after HTTP de-chunking, before content decoding), never
  re-encoded; a Content-Encoding is undone into ``decoded_body`` instead. ``stream_chunks`` holds one
  ``(offset_ms, end_byte)`` pair per network read, so a replay reproduces both the bytes and their timing.
- A record keeps at most ``max_record_bytes`` of a response body, its head (``record.tap``);
  ``response_bytes`` counts the whole body, so ``response_bytes > len(body kept)`` says it was truncated.
- No secret is ever held here: headers are redacted and the API key is reduced to a keyed fingerprint
  before the Exchange is built.
"""

from __future__ import annotations

import enum
import os
import time
from datetime import UTC, datetime
from typing import Any

import msgspec


class Ending(enum.StrEnum):
    """How the response's bytes ended, as the live path saw it: the fact ``record.outcome`` judges."""

    BODY_END = "body_end"  # the upstream's body ended normally and was passed on
    CLIENT_LEFT = "client_left"  # the client went away (a write failed, or its handler was cancelled)
    UPSTREAM_CUT = "upstream_cut"  # the upstream connection broke before its body ended
    UPSTREAM_TIMEOUT = "upstream_timeout"  # connect or idle read timeout (before the headers: 504)
    UPSTREAM_UNREACHABLE = "upstream_unreachable"  # could not connect; the client got 502
    REJECTED = "rejected"  # the proxy refused the request itself


class Outcome(enum.StrEnum):
    """How an exchange ended, as recorded. Stored as text; one line per member is the whole contract."""

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


class Usage(msgspec.Struct, kw_only=True):
    """Token counts in one shape for every API family, as the provider reported them; None = not reported.

    The families map their own wire fields onto these (``apis``): ``prompt_tokens`` counts every input
    token (cache reads and cache writes included), ``completion_tokens`` every output token (reasoning
    included), so each token is counted, and priced, exactly once.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None  # of prompt_tokens, read from the provider's cache
    reasoning_tokens: int | None = None  # of completion_tokens
    cache_write_tokens: int | None = None  # of prompt_tokens, written to the cache (Anthropic)
    cache_write_1h_tokens: int | None = None  # of cache_write_tokens, with a 1-hour lifetime
    source: UsageSource = UsageSource.MISSING

    @classmethod
    def from_provider(cls, **tokens: int | None) -> Usage:
        """Counts from a provider; the source is ``provider`` when any headline count is present."""
        usage = cls(**tokens)
        if any(v is not None for v in (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)):
            usage.source = UsageSource.PROVIDER
        return usage


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
    raw = bytearray((time.time_ns() // 1_000_000 & 0xFFFFFFFFFFFF).to_bytes(6, "big") + _random10())
    raw[6] = 0x70 | raw[6] & 0x0F  # version 7
    raw[8] = 0x80 | raw[8] & 0x3F  # variant 10
    h = raw.hex()
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
    api: str = "other"  # the API family that speaks on this endpoint (``apis.families``)
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
    status: int | None = None  # what the client got so far; settled with the outcome
    upstream_status: int | None = None
    response_headers: dict[str, str] = {}
    response_body: bytes = b""
    stream_chunks: list[tuple[float, int]] = []
    # Bytes of the body that passed the proxy (decoded, like ``delivered``); more than the body kept
    # when the record was capped at ``max_record_bytes``.
    response_bytes: int = 0
    # Bytes of the body whose output the client's connection accepted.
    delivered: int = 0
    first_byte_ms: float | None = None
    duration_ms: float | None = None
    finished_at: datetime | None = None
    ending: Ending = Ending.BODY_END
    error: str | None = None

    # derived by decode.finalize, in the writer
    outcome: Outcome = Outcome.COMPLETE
    decoded_body: bytes | None = None  # response_body with its Content-Encoding undone
    returned_model: str | None = None
    finish_reason: str | None = None
    ttft_ms: float | None = None
    usage: Usage = msgspec.field(default_factory=Usage)
    provider_cost: float | None = None  # the charge the upstream reported itself (OpenRouter's usage.cost)
    assembled: bytes | None = None
    event_count: int = 0
    decode_errors: int = 0
    # The live fold of the body (``record.tap.BodyTap``) from the tee to ``decode.finalize``, which
    # clears it: state, not data, so it never reaches the spool. Cleared earlier where the serving
    # process is done with it (a writer process's frame carries it; a mode that records nothing), as
    # the tap refers back to the exchange: a cycle left for a full collection otherwise.
    body_tap: Any = None

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

    def finish(self, ending: Ending | None = None, error: str | None = None) -> None:
        """Close the exchange once; a later call keeps the first ending (the cause, not the symptom)."""
        if self.finished_at is not None:
            return
        if ending is not None:
            self.ending = ending
        if error is not None:
            self.error = error
        self.duration_ms = self.elapsed_ms()
        self.finished_at = utcnow()

    @property
    def truncated(self) -> bool:
        """Only the head of the response body was kept (``max_record_bytes``)."""
        kept = self.decoded_body if self.decoded_body is not None else self.response_body
        return self.response_bytes > len(kept)

    def stored_response(self) -> tuple[dict[str, str], bytes]:
        """Headers and body as the record keeps them: decoded, so a replay can serve them plainly."""
        if self.decoded_body is None:
            return self.response_headers, self.response_body
        headers = {k: v for k, v in self.response_headers.items() if k != "content-encoding"}
        return headers, self.decoded_body
