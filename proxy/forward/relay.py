"""The relay: a response body copied to the client inside the callbacks that receive it (``server.relay``).

The tee (``forward.tee``) wakes the handler's coroutine for every upstream read and writes through
aiohttp's ``StreamResponse``. The relay takes over only the body's copy, once the upstream's status and
headers are known and the client's response is prepared: ``forward.hooks`` switches the response's
``StreamReader`` so the parser's calls come here, and the bytes of one upstream read go to the client's
transport in one callback scheduled right after the read (so the pieces of one read, several HTTP chunks
for instance, leave in one write), or at once when ``FLUSH_BYTES`` have come before it runs (so no flush
handles more than that; the rest of that read is then parsed on the next turn of the loop). The
handler's coroutine waits once per body, and wakes only for what must be awaited.

Invariants (those of the tee, and):
- Each read is handed to the record's ``BodyTap`` (an append and a clock read) and then written to the
  client, framed as the client's response is: one HTTP chunk per write when it is chunked, raw when its
  length is known (or it ends with the connection). Bytes are forwarded as the upstream sent them,
  content-encoded or not (an encoded stream the usage filter must read uses the tee instead).
- The usage filter (``StreamFilter``), when the proxy asked for usage, sits between the read and the write,
  as in the tee.
- Backpressure: while the client's transport is above its high-water mark (``writing_paused``), or the
  tap must decode before taking more (``BodyTap.feed`` says so), the next upstream read pauses the
  upstream protocol's reading (at most one read is buffered past the mark); the handler awaits the
  client's drain and the tap's catch-up, then resumes it.
- The upstream's read timeout (``sock_read``) is the relay's while hooked: one timer for the body, the
  last read's time noted per read (aiohttp made and cancelled a timer per read), failing the body as
  aiohttp's timer would when nothing came for that long. It does not run while the upstream is paused, so
  a slow client is never taken for a stalled upstream; resuming starts it afresh (as aiohttp does).
- Endings are the tee's: the body ends (``write_eof``), the client leaves (a closed transport, a failed
  drain, or the handler cancelled), the upstream cuts or stalls (``set_exception`` from the parser or the
  read timer; the client's connection is aborted), the ``total`` timeout. Each leaves ``delivered`` and a
  definite ``Ending`` on the exchange; the reader is given back to aiohttp before the handler leaves.
"""

from __future__ import annotations

import asyncio

from proxy.apis.family import StreamFilter
from proxy.forward import hooks
from proxy.forward.tee import Passage, client_gone, finish_body, upstream_failed
from proxy.record.exchange import Exchange
from proxy.record.tap import SLICE, BodyTap

# Bytes received past which they are flushed at once rather than by the scheduled callback, and the
# upstream's read is left for the next turn of the loop: one of the tap's decoding slices, so no flush
# holds the loop longer than a slice's work.
FLUSH_BYTES = SLICE


class Relay:
    """One body's copy; ``data``/``eof``/``error`` run in the upstream protocol's callbacks, ``run`` in the handler."""

    __slots__ = (
        "behind",
        "ended",
        "ex",
        "failure",
        "hold",
        "hooked",
        "last_read",
        "left",
        "loop",
        "paused",
        "pending",
        "pending_bytes",
        "read_timeout",
        "read_timer",
        "scheduled",
        "tap",
        "usage_filter",
        "waiter",
        "work",
    )

    def __init__(self, ex: Exchange, tap: BodyTap, usage_filter: StreamFilter | None) -> None:
        self.hooked: hooks.Hooked | None = None
        self.ex, self.tap, self.usage_filter = ex, tap, usage_filter
        self.loop = asyncio.get_running_loop()
        self.pending: list[bytes] = []  # the pieces of the current read, written together
        self.pending_bytes = 0
        self.scheduled = False  # a flush is due
        self.hold = False  # the next read pauses the upstream
        self.paused = False  # the upstream's reading is paused by the relay
        self.behind = False  # the tap must catch up
        self.work = False  # the handler has something to await
        self.ended = False
        self.left = False  # the client's connection closed
        self.failure: BaseException | None = None  # what the upstream failed with
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout: float | None = None  # ``sock_read``, once hooked
        self.read_timer: asyncio.TimerHandle | None = None
        self.last_read = 0.0  # the loop's time at the last read

    # --- the upstream protocol's callbacks (through ``hooks.RelayReader``)

    def data(self, data: bytes) -> None:
        if not data or self.ended:
            return
        self.last_read = self.loop.time()
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.hold and not self.paused:
            self.paused = True
            self.hooked.pause_upstream()  # type: ignore[union-attr]
        if self.pending_bytes >= FLUSH_BYTES:
            # A fast upstream can feed megabytes before the scheduled flush runs; the filter and the tap
            # must never take that in one step (it held the loop for 40 ms on a 400 MiB stream).
            self.flush()
            if not self.paused and not self.ended:
                # One socket read can carry 256 KiB: the parser keeps the rest of it for a later turn of
                # the loop, so no callback copies much more than FLUSH_BYTES.
                self.paused = True
                self.hooked.pause_upstream()  # type: ignore[union-attr]
                self.loop.call_soon(self._go_on)
        elif not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def eof(self) -> None:
        self.flush()
        self._end()

    def error(self, exc: BaseException) -> None:
        self.flush()
        if not self.ended:
            self.failure = exc
        self._end()

    def flush(self) -> None:
        """Everything received since the last flush: to the tap, through the filter, to the client."""
        self.scheduled = False
        pending = self.pending
        if not pending or self.ended:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self.pending_bytes = 0
        hooked: hooks.Hooked = self.hooked  # type: ignore[assignment]
        client = hooked.client
        transport = client.transport
        if transport is None or transport.is_closing():
            # Checked before the tap takes the read: what arrives after the client left is not its answer
            # (its handler's cancellation may not have run yet), as with the tee.
            self.left = True
            self._end()
            return
        tap = self.tap
        behind = tap.feed(data)
        usage_filter = self.usage_filter
        out = usage_filter.feed(data) if usage_filter is not None else data
        if out:
            if hooked.chunked:
                out = b"%x\r\n%b\r\n" % (len(out), out)
            transport.write(out)
            hooked.count(len(out))
        self.ex.delivered = tap.total - (usage_filter.held if usage_filter is not None else 0)
        if behind or client.writing_paused:
            self.behind = self.behind or behind
            self.hold = True
            self._wake()

    def _go_on(self) -> None:
        """After a bounded step: the rest of the upstream's read, unless the handler holds it back."""
        if self.paused and not self.hold and not self.ended:
            self._resume()

    def _resume(self) -> None:
        self.paused = False
        self.hooked.resume_upstream()  # type: ignore[union-attr]
        if self.read_timer is None and not self.ended:
            self.watch_reads()

    def watch_reads(self) -> None:
        """The read timeout, from now (when hooked, and after the upstream was paused)."""
        timeout = self.read_timeout
        if timeout:
            self.last_read = self.loop.time()
            self.read_timer = self.loop.call_at(self.last_read + timeout, self._read_due)

    def _read_due(self) -> None:
        self.read_timer = None
        if self.ended or self.paused:  # a paused upstream is not being read: ``_resume`` starts it again
            return
        due = self.last_read + self.read_timeout  # type: ignore[operator]
        if self.loop.time() >= due:
            self.hooked.read_timed_out()  # type: ignore[union-attr]  # the reader's ``set_exception``: ``error``
        else:
            self.read_timer = self.loop.call_at(due, self._read_due)

    def _stop_watching(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _wake(self) -> None:
        self.work = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        if self.hooked is not None:
            self.hooked.release()
        self.ended = True
        self._stop_watching()
        self._wake()

    # --- the handler's side

    async def run(self) -> None:
        """Until the body ends; awaits only the client's drain and the tap's catch-up when asked to."""
        hooked: hooks.Hooked = self.hooked  # type: ignore[assignment]
        with hooked.timer:  # the ``total`` timeout, as aiohttp's own reads apply it
            while not self.ended:
                if not self.work:
                    self.waiter = self.loop.create_future()
                    await self.waiter
                    self.waiter = None
                    continue
                self.work = False
                if hooked.client.writing_paused:
                    await hooked.writer.drain()
                if self.behind:
                    self.behind = False
                    await self.tap.catch_up()
                self.hold = False
                if hooked.client.transport is None:
                    self.left = True
                    self._end()
                elif self.paused and not self.ended:
                    self._resume()

    def stop(self) -> None:
        self.ended = True
        self._stop_watching()
        if self.hooked is not None:
            self.hooked.release()


async def relay_body(passage: Passage) -> bool:
    """``forward.tee.copy_body`` through the relay; False, having touched nothing, when it cannot be hooked."""
    request, upstream, response, ex, tap, usage_filter = passage
    relay = Relay(ex, tap, usage_filter)
    hooked = hooks.attach(upstream, request, relay)
    if hooked is None:
        return False
    if hooked.buffered:
        relay.pending.append(hooked.buffered)
        relay.flush()
    if not hooked.live and not relay.ended:
        relay.failure = hooked.reader.exception()
        relay.ended = True
    elif not relay.ended:
        relay.read_timeout = hooked.read_timeout
        relay.watch_reads()
    try:
        await relay.run()
        if relay.left:
            client_gone(ex)
        elif relay.failure is not None:
            upstream_failed(request, ex, relay.failure)
        else:
            await finish_body(response, ex, tap, usage_filter)
    except asyncio.CancelledError:
        relay.stop()
        client_gone(ex)
        raise
    except TimeoutError as exc:  # the ``total`` timeout
        relay.stop()
        upstream_failed(request, ex, exc)
    except ConnectionError:  # the client's connection closed while its drain was awaited
        relay.stop()
        client_gone(ex)
    return True
