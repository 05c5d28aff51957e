"""The interface every API family implements, and the shapes it hands to the rest of the proxy.

An API family is the unit that knows one wire format (chat completions, Responses, Messages, ...). The
live path asks it how to read a request and whether to add a usage option; the writer asks it to fold a
body or a stream into the record's fields; replay asks it which fields leave the match key and how to
play a non-streamed recording as a stream. Nothing outside ``apis`` knows any family's field names.

Invariants:
- Pure: no I/O, no clock, no aiohttp, no SQL. Bytes in, plain values out.
- Never raises on what a client or upstream sent: an undecodable request is ``None``, an undecodable
  event is counted in ``Folded.decode_errors`` and skipped.
- Streams are folded incrementally (``StreamFold``), so a stream of any length is folded as it passes,
  in bounded memory; one loop (``EventFold.feed``) drives every family's fold, the family adds its step.
- ``Folded.complete_at`` is where the family's own end marker ended (``[DONE]`` for chat,
  ``response.completed`` for Responses, ``message_stop`` for Messages); a stream without it is never
  complete. Token counts are what the provider reported, mapped onto ``record.exchange.Usage``; never 0
  for a count that was not reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

import msgspec

from proxy.apis.codec import DECODE_ERRORS
from proxy.apis.errors import openai_error_body
from proxy.record.exchange import Usage

V = TypeVar("V")
A = TypeVar("A")

# Top-level request fields that never change an answer, for every family: not part of the match key.
COMMON_IGNORED = ("stream", "user", "metadata")


class RequestInfo(msgspec.Struct, kw_only=True):
    """What the proxy reads of a request body."""

    model: str | None = None
    stream: bool = False
    user: str | None = None
    # The client itself asked for the usage data a family only sends on request (chat's include_usage).
    wants_usage: bool = False


class Event(NamedTuple):
    """One server-sent event of a recorded stream."""

    offset_ms: float  # when the network read that completed it arrived, after the request
    end: int  # its end in the raw body (just past its blank line)
    type: str  # the ``event:`` field; "" when absent
    data: str | bytes


class Folded(msgspec.Struct, kw_only=True):
    """A response body or stream folded into the record's derived fields."""

    usage: Usage = msgspec.field(default_factory=Usage)
    provider_cost: float | None = None  # the charge the upstream reported itself
    model: str | None = None
    finish_reason: str | None = None
    ttft_ms: float | None = None  # the first event carrying output of any kind
    assembled: bytes | None = None  # a stream as the JSON a non-streamed call returns
    complete_at: int | None = None  # where the end marker ended; None: never complete
    error: str | None = None  # an error the body carried
    error_event: bool = False  # ... as a failure event inside an HTTP 200 stream
    events: int = 0
    decode_errors: int = 0


class StreamFilter(Protocol):
    """Re-frames a stream on event boundaries to hold back what the proxy asked for and the client did not."""

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...

    @property
    def held(self) -> int: ...


class StreamFold(Protocol):
    """A stream folded event by event as it passes: ``feed`` any number of times, then ``result`` once.

    Memory stays bounded whatever the stream's length: text kept for ``Folded.assembled`` stops at the
    ``text_limit`` the family's ``stream_fold`` was given (the rest is still counted and folded: usage,
    finish reasons and the end marker come from the whole stream).
    """

    def feed(self, events: Iterable[Event]) -> None: ...

    def result(self) -> Folded: ...


class Family(Protocol):
    name: str  # stored in ``exchanges.api``
    ignored: tuple[str, ...]  # top-level request fields left out of the match key
    end_marker: str  # what completes its stream, in words, for the record of one that lacks it
    # Its streams end with an event of their own; False: a stream's (or body's) end is its only end marker,
    # so it was complete only if all of it came (``record.decode``).
    end_event: bool

    def read_request(self, body: bytes) -> RequestInfo | None:
        """Model, stream flag and user of a JSON request body; None for anything else."""
        ...

    def usage_option(self, body: bytes, info: RequestInfo) -> bytes | None:
        """The body with the option that makes the upstream report usage, or None when none is needed."""
        ...

    def refuses_option(self, status: int, body: bytes) -> bool:
        """Whether an upstream answer rejects the option ``usage_option`` added."""
        ...

    def hiding_filter(self, max_event_bytes: int) -> StreamFilter | None:
        """The filter that hides, from a client that did not ask, what the usage option added."""
        ...

    def stream_fold(self, text_limit: int) -> StreamFold:
        """A fold for one stream, keeping at most ``text_limit`` characters of assembled text."""
        ...

    def fold_body(self, body: bytes) -> Folded:
        """A non-streamed response body (already content-decoded)."""
        ...

    def body_to_stream(self, body: bytes, wants_usage: bool) -> list[bytes] | None:
        """A recorded non-streamed body as the events a streamed request expects; None: not convertible."""
        ...

    def unconvertible(self, body: bytes) -> str | None:
        """Why a recorded response (a non-streamed body, or a stream's assembled response) must not be played
        in the other form, in words a replay miss quotes; None when it may (``always_convertible``)."""
        ...

    def error_body(self, status: int, message: str, type_: str, code: str | None = None, **extra: Any) -> bytes:
        """An error the proxy makes itself, in the shape this family's clients expect (``apis.errors``)."""
        ...


def always_convertible(body: bytes) -> str | None:
    """``Family.unconvertible`` of a family whose every finished answer converts (or plays as recorded)."""
    return None


# Text an assembled response keeps when no cap is given (``max_record_bytes`` sets it in the proxy).
NO_TEXT_LIMIT = 1 << 62


class EventFold(Generic[V, A]):
    """The loop every family's stream fold runs (a ``StreamFold``): count each event, decode it with the
    family's ``decoder``, let the family's ``step`` fold it into its ``assembler`` (made with the text
    limit), and note TTFT and the end where the step first says so. The family adds ``step`` and ``result``.

    An event whose data is one of ``end_data`` (chat's ``[DONE]``) is an end marker with nothing to
    decode; an event that does not decode is counted in ``decode_errors`` and skipped.
    """

    decoder: ClassVar[msgspec.json.Decoder[Any]]
    assembler: Callable[[int], A]
    end_data: ClassVar[tuple[str | bytes, ...]] = ()

    def __init__(self, text_limit: int) -> None:
        self.folded = Folded()
        self.asm = self.assembler(text_limit)

    def feed(self, events: Iterable[Event]) -> None:
        folded, decoder, step, end_data = self.folded, self.decoder, self.step, self.end_data
        for event in events:
            folded.events += 1
            if event.data in end_data:
                folded.complete_at = event.end if folded.complete_at is None else folded.complete_at
                continue
            try:
                view = decoder.decode(event.data)
            except DECODE_ERRORS:
                folded.decode_errors += 1
                continue
            output, ended = step(event, view)
            if folded.ttft_ms is None and output:
                folded.ttft_ms = event.offset_ms
            if folded.complete_at is None and ended:
                folded.complete_at = event.end

    def step(self, event: Event, view: V) -> tuple[bool, bool]:
        """Fold one decoded event in; say whether output has come yet and whether the stream has ended."""
        raise NotImplementedError

    def result(self) -> Folded:
        raise NotImplementedError


def fold_stream(family: Family, events: Iterable[Event], text_limit: int = NO_TEXT_LIMIT) -> Folded:
    """A whole stream's events folded at once (tests, and streams recorded before the live fold)."""
    fold = family.stream_fold(text_limit)
    fold.feed(events)
    return fold.result()


class Defaults:
    """What a family has unless it says otherwise: the request fields every family leaves out of the match
    key, errors in OpenAI's shape, and every finished answer convertible between its two forms."""

    ignored: tuple[str, ...] = COMMON_IGNORED
    end_event: bool = True
    error_body = staticmethod(openai_error_body)
    unconvertible = staticmethod(always_convertible)


class NoUsageOption:
    """For families whose upstream reports usage unasked: nothing is added to a request, nothing hidden."""

    def usage_option(self, body: bytes, info: RequestInfo) -> bytes | None:
        return None

    def refuses_option(self, status: int, body: bytes) -> bool:
        return False

    def hiding_filter(self, max_event_bytes: int) -> StreamFilter | None:
        return None


def decode_request(body: bytes, decoder: msgspec.json.Decoder[V]) -> V | None:
    """A JSON request body decoded with ``decoder``; None for anything else (not the proxy's to judge: the
    upstream answers a malformed request itself)."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        return decoder.decode(body)
    except DECODE_ERRORS:
        return None


def fold_json_body(body: bytes, decoder: msgspec.json.Decoder[V], fill: Callable[[Folded, V], None]) -> Folded:
    """A non-streamed JSON body decoded with ``decoder`` and folded by ``fill``; anything else folds to nothing."""
    folded = Folded(complete_at=len(body))
    if not body.lstrip().startswith(b"{"):
        return folded
    try:
        view = decoder.decode(body)
    except DECODE_ERRORS:
        folded.decode_errors = 1
        return folded
    fill(folded, view)
    return folded
