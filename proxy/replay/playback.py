"""Serving from recordings: a recorded response played back to a live client, or a miss explained.

Invariants:
- Never opens an upstream connection: everything comes from ``ReplayIndex`` (the database).
- A recorded stream is played from its stored raw bytes, network read by network read, at the recorded
  offsets divided by the speed factor (``original``) or at once (``instant``). Comments, CRLFs and event
  framing are untouched, except that a usage-only chunk is held back from a client that did not ask for
  usage, with the same filter of the API family the live path uses.
- A recording of a client that left early replays what that client received: the upstream's status and
  headers, and the bytes it got (``delivered_bytes``), not the 499 the record says.
- A streamed request answered by a non-streamed recording, or the reverse, is converted and says so in
  ``X-Proxy-Replay-Converted``; a recording the family says cannot be converted faithfully (a Responses
  object that had not finished, a background response still queued) is a miss that says why (auto
  mode forwards it, as any miss). Every answer carries ``X-Proxy-Replay: hit`` or ``miss`` and, on a hit,
  ``X-Proxy-Exchange-Id`` names the recording played.
- A miss is a 404 in the error shape of the request's API family (OpenAI's ``type: replay_miss``, or
  Anthropic's ``not_found_error`` with ``code: replay_miss``; the SDKs do not retry a 404) that
  names the sessions searched and the closest recorded requests with their differing fields.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from proxy.apis.family import Family, StreamFilter
from proxy.config import Mode, Replay, Timing
from proxy.headers import CONVERTED_HEADER, EXCHANGE_ID_HEADER, HOP_BY_HOP, REPLAY_HEADER, TIMING_HEADER
from proxy.record.decode import is_event_stream, split_reads
from proxy.record.exchange import Exchange, Outcome
from proxy.record.redact import REDACTED
from proxy.replay.har import MAX_EVENT_BYTES
from proxy.replay.index import Closest, ReplayIndex, Scope, Take, describe_scope
from proxy.replay.matchkey import MISSING
from proxy.store.stored import Stored, StoredBody

log = logging.getLogger("proxy.replay.playback")

_NOT_REPLAYED = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}
_SHOWN_DIFFERENCES = 5


class Pacer:
    """Sleeps until a recorded offset (ms after the request arrived) scaled by ``speed``; None = instant."""

    def __init__(self, t0: float, speed: float | None) -> None:
        self.t0 = t0
        self.speed = speed

    async def at(self, offset_ms: float | None) -> None:
        if self.speed is None or not offset_ms:
            return
        delay = self.t0 + offset_ms / 1000 / self.speed - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


class Playback:
    def __init__(self, index: ReplayIndex, mode: Mode, settings: Replay) -> None:
        self.index = index
        self.mode = mode
        self.settings = settings

    def _pacer(self, request: web.Request, t0: float) -> Pacer:
        value = request.headers.get(TIMING_HEADER, "").strip().lower()
        if value == Timing.INSTANT or (not value and self.settings.timing is Timing.INSTANT):
            return Pacer(t0, None)
        try:
            speed = float(value) if value and value != Timing.ORIGINAL else self.settings.speed
        except ValueError:
            speed = self.settings.speed
        return Pacer(t0, speed if speed > 0 else self.settings.speed)

    async def answer(
        self, request: web.Request, ex: Exchange, family: Family, wants_usage: bool
    ) -> web.StreamResponse | None:
        """The replayed (or missed) response; None only when the mode forwards a miss upstream (auto)."""
        body = ex.request_body
        key = ex.match_key = self.index.key(ex.method, ex.path, body, ex.upstream)
        scope = self.index.scope_for(ex.session_id)
        try:
            take = await self.index.take(scope, ex.session_id, key)
            rec = await self.index.recording(take.recording_id) if take.recording_id else None
        except Exception as exc:  # noqa: BLE001 - any database failure: say so, never crash
            log.error("replay lookup failed: %s: %s", type(exc).__name__, exc)
            ex.replayed = True
            message = f"replay: recordings unavailable ({type(exc).__name__})"
            return _error(family, 503, message, "replay_unavailable")
        problem = _conversion_problem(ex, rec, family) if rec is not None else None
        if (rec is None or problem) and self.mode.forwards:
            return None
        ex.replayed = True
        if rec is None:
            return await self._miss(ex, family, key, scope, take)
        if problem:
            return _error(family, 404, problem, "replay_miss", match_key=key, recording=rec.id)
        hide = None if wants_usage else family.hiding_filter(MAX_EVENT_BYTES)
        return await self._play(request, ex, rec, family, hide, self._pacer(request, ex.t0))

    async def _play(
        self,
        request: web.Request,
        ex: Exchange,
        rec: Stored,
        family: Family,
        hide: StreamFilter | None,
        pacer: Pacer,
    ) -> web.StreamResponse:
        body = rec.body or StoredBody()
        recorded, chunks = body.response_body or b"", body.stream_chunks
        status = _status(rec)
        if rec.outcome == Outcome.CLIENT_DISCONNECTED:
            recorded, chunks = as_delivered(recorded, chunks, body.delivered_bytes)
        headers = {k: v for k, v in body.response_headers.items() if k not in _NOT_REPLAYED and v != REDACTED}
        headers[REPLAY_HEADER] = "hit"
        headers[EXCHANGE_ID_HEADER] = rec.id
        conversion = _conversion(ex, rec)
        if is_event_stream(body.response_headers):
            if conversion is None or body.assembled is None:
                reads = split_reads(recorded, chunks, rec.duration_ms)
                return await _stream(request, status, headers, reads, pacer, hide)
            headers["content-type"] = "application/json"
            headers[CONVERTED_HEADER] = "stream-to-json"
            await pacer.at(rec.duration_ms)
            return web.Response(status=status, headers=headers, body=body.assembled.encode())
        if conversion is not None:
            events = family.body_to_stream(recorded, hide is None)
            if events is not None:
                headers["content-type"] = "text/event-stream"
                headers["cache-control"] = "no-cache"
                headers[CONVERTED_HEADER] = "json-to-stream"
                reads = [(rec.duration_ms or 0.0, b"".join(events))]
                return await _stream(request, status, headers, reads, pacer, None)
        await pacer.at(rec.duration_ms)
        return web.Response(status=status, headers=headers, body=recorded)

    async def _miss(self, ex: Exchange, family: Family, key: str, scope: Scope, take: Take) -> web.Response:
        where = describe_scope(scope)
        request_line = f"{ex.method} {ex.path}" + ("" if ex.upstream == "default" else f" (upstream {ex.upstream!r})")
        closest: list[Closest] = []
        if take.available:
            message = (
                f"replay miss: this is request #{take.position} of {request_line} with this body in {where}, "
                f"but only {take.available} recording(s) match it (on_exhausted = {self.settings.on_exhausted}; "
                'set [replay] on_exhausted = "repeat-last" or "cycle" to reuse them)'
            )
        else:
            closest, compared = await self.index.closest(
                scope, ex.method, ex.path, ex.upstream, ex.request_body, self.settings.closest
            )
            if not compared:
                message = f"replay miss: {where} has no recorded {request_line} requests"
            else:
                parts = [f"({i}) {_describe(c)}" for i, c in enumerate(closest, 1)]
                message = f"replay miss: no recording in {where} matches {request_line}. " + (
                    "Closest recorded requests: " + " ".join(parts) if parts else ""
                )
        closest_shown = [
            {"id": c.id, "session_id": c.session_id, "recordings": c.copies, "differences": _shown(c)} for c in closest
        ]
        sessions = list(scope) if scope is not None else None
        return _error(family, 404, message, "replay_miss", match_key=key, sessions=sessions, closest=closest_shown)


def _status(rec: Stored) -> int:
    """The status a replay answers with."""
    status = rec.status if rec.status is not None else 500  # the index offers only recordings with one
    if rec.outcome == Outcome.CLIENT_DISCONNECTED and rec.upstream_status is not None:
        return rec.upstream_status  # stored as 499, but the client that left had received the upstream's status
    return status


def _conversion(ex: Exchange, rec: Stored) -> str | None:
    """How a successful recording must change form for this request (``CONVERTED_HEADER``); None: as recorded."""
    body = rec.body or StoredBody()
    if not 200 <= _status(rec) < 300:
        return None
    if is_event_stream(body.response_headers):
        return None if ex.stream else "stream-to-json"
    return "json-to-stream" if ex.stream else None


def _conversion_problem(ex: Exchange, rec: Stored, family: Family) -> str | None:
    """Why the recording cannot be converted as this request needs (the miss's message); None: it can."""
    conversion, body = _conversion(ex, rec), rec.body or StoredBody()
    if conversion == "stream-to-json":
        if body.assembled is None:
            return None  # played as recorded, as before there was an assembled response
        problem = family.unconvertible(body.assembled.encode())
    elif conversion == "json-to-stream":
        recorded = body.response_body or b""
        if rec.outcome == Outcome.CLIENT_DISCONNECTED:
            recorded = as_delivered(recorded, body.stream_chunks, body.delivered_bytes)[0]
        problem = family.unconvertible(recorded)
    else:
        return None
    if problem is None:
        return None
    wanted = "a stream" if ex.stream else "a non-streamed (JSON) response"
    return f"replay miss: recording {rec.id} matches, but this request asks for {wanted} and {problem}"


def as_delivered(
    body: bytes, chunks: list[tuple[float, int]], delivered: int | None
) -> tuple[bytes, list[tuple[float, int]]]:
    """The body and its reads cut to the ``delivered`` bytes a client got before it left (None: all)."""
    if delivered is None or delivered >= len(body):
        return body, chunks
    kept = [(offset, end) for offset, end in chunks if end <= delivered]
    reaching = next(((offset, delivered) for offset, end in chunks if end > delivered), None)
    if reaching is not None and (not kept or kept[-1][1] < delivered):
        kept.append(reaching)
    return body[:delivered], kept


def _plain(value: object) -> object:
    return None if value is MISSING else value


def _shown(c: Closest) -> list[dict[str, Any]]:
    return [{"path": d.path, "request": _plain(d.request), "recorded": _plain(d.recorded)} for d in c.differences]


def _describe(c: Closest) -> str:
    session = f" in session {c.session_id!r}" if c.session_id else ""
    if c.copies > 1:
        session += f" ({c.copies} recordings of it)"
    if not c.differences:
        return f"{c.id}{session}: the same request, but not replayable (partial, or stored without bodies)"
    shown = "; ".join(d.describe() for d in c.differences[:_SHOWN_DIFFERENCES])
    more = len(c.differences) - _SHOWN_DIFFERENCES
    count = f"{len(c.differences)} difference" + ("s" if len(c.differences) > 1 else "")
    return f"{c.id}{session}, {count}: {shown}" + (f"; and {more} more" if more > 0 else "")


def _error(family: Family, status: int, message: str, code: str, **extra: Any) -> web.Response:
    body = family.error_body(status, message, code, code, **extra)
    response = web.Response(status=status, body=body, content_type="application/json")
    response.headers[REPLAY_HEADER] = "miss"
    return response


async def _stream(
    request: web.Request,
    status: int,
    headers: dict[str, str],
    reads: Iterable[tuple[float, bytes]],
    pacer: Pacer,
    usage_filter: StreamFilter | None,
) -> web.StreamResponse:
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    try:
        for offset, data in reads:
            await pacer.at(offset)
            out = usage_filter.feed(data) if usage_filter is not None else data
            if out:
                await response.write(out)
        if usage_filter is not None:
            rest = usage_filter.close()
            if rest:
                await response.write(rest)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left; nothing is recorded for a replay
    return response
