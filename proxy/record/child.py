"""The writer process: ``python -m proxy.record.child FD``, started by ``record.process`` only.

Invariants:
- Runs one ``Recorder`` with its writer on this process's loop (``WriterMode.LOOP``) and its own
  engine, configured by the first frame; every record frame is submitted to it as it arrives.
- Tells the serving process when records finished (``done``, with their lags and this recorder's
  counters), what was written (``written``, bodies and headers left out: the metrics need the rest),
  its counters whenever they changed otherwise (``stats``, looked at every ``STATS_EVERY``), and once
  it is ready.
- Stops on ``close``, or when the socket closes (the serving process is gone, even by ``kill -9``):
  either way everything it received is written, spooled or quarantined first. Ctrl-C and SIGTERM are
  not its to act on (it runs in a session of its own; SIGTERM is ignored): the serving process closes
  it in order.
- Never raises on a frame: one that cannot be read is logged and counted as dropped.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import threading
from typing import Any

import msgspec

from proxy.config import WriterMode
from proxy.record.channel import Channel, Kind, control_frame, read_record, unpickle, written_frame
from proxy.record.exchange import Exchange
from proxy.record.recorder import Recorder, new_loop
from proxy.store.db import create_engine

log = logging.getLogger("proxy.record.recorder")

STATS_EVERY = 0.1  # seconds


def _thin(ex: Exchange) -> Exchange:
    """A written record as ``on_written`` gets it in the serving process: no bodies, no headers."""
    return msgspec.structs.replace(
        ex, request_body=b"", response_body=b"", decoded_body=None, assembled=None,
        request_headers={}, response_headers={}, stream_chunks=[],
    )  # fmt: skip


class Child:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recorder: Recorder | None = None
        self.channel: Channel | None = None
        self.stop: asyncio.Event | None = None
        self._configured: asyncio.Future[dict[str, Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    async def run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.stop = asyncio.Event()
        self._configured = loop.create_future()
        self.channel = Channel(self._on_frame, self.stop.set)
        await loop.create_unix_connection(lambda: self.channel, sock=self.sock)  # type: ignore[arg-type, return-value]
        stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({self._configured, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not self._configured.done():
            return  # the serving process went before it said anything
        recorder = self.recorder = self._recorder(self._configured.result())
        await recorder.start()
        self.channel.write(control_frame("ready"))
        watch = asyncio.create_task(self._watch_stats(), name="proxy-writer-stats")
        await self.stop.wait()
        await recorder.close()
        watch.cancel()
        self.channel.write(control_frame("stats", recorder.stats))
        self.channel.close()

    async def _watch_stats(self) -> None:
        """Counters that change between batches (the database probed back, a write-back) go out too."""
        assert self.recorder is not None
        sent = msgspec.structs.replace(self.recorder.stats)
        while True:
            await asyncio.sleep(STATS_EVERY)
            stats = self.recorder.stats
            if stats != sent:
                sent = msgspec.structs.replace(stats)
                self.send(control_frame("stats", sent))

    def _recorder(self, cfg: dict[str, Any]) -> Recorder:
        _configure_logging(self, cfg["log_levels"], cfg["log_filters"])
        url, kwargs = cfg["recipe"]
        recorder = Recorder(
            create_engine(url, **kwargs),
            writer=WriterMode.LOOP,
            queue_size=cfg["queue_size"],
            queue_max_bytes=cfg["queue_max_bytes"],
            batch_size=cfg["batch_size"],
            batch_delay=cfg["batch_delay"],
            retry_interval=cfg["retry_interval"],
            spool_dir=cfg["spool_dir"],
            spool_max_bytes=cfg["spool_max_bytes"],
            redactor=cfg["redactor"],
            key_rules=cfg["key_rules"],
            pricing=cfg["pricing"],
            on_written=self._written if cfg["hear_written"] else None,
        )
        recorder.intake.on_done = self._done
        return recorder

    def _on_frame(self, kind: Kind, payload: bytes) -> None:
        recorder = self.recorder
        if kind in (Kind.PACKED, Kind.PICKLED) and recorder is not None:
            try:
                ex = read_record(kind, payload)
            except Exception:  # never expected: the serving process wrote it
                log.exception("recorder: a record from the serving process could not be read; dropped")
                recorder.intake.counted()
                recorder.stats.dropped += 1
                recorder.intake.done(1)
                return
            recorder.submit(ex)
            return
        try:
            message = unpickle(payload)
        except Exception:
            log.exception("recorder: a message from the serving process could not be read")
            return
        what = message[0]
        if what == "config" and self._configured is not None and not self._configured.done():
            self._configured.set_result(message[1])
        elif recorder is None:
            return
        elif what == "hurry":
            recorder.intake.hurry = max(0, recorder.intake.hurry + message[1])
            recorder.intake.nudge()
        elif what == "spool":
            recorder.spooled()
        elif what == "close" and self.stop is not None:
            self.stop.set()

    def send(self, frame: bytes) -> bool:
        """From the writer's task or another thread (the spooler, a driver's): sent on the loop's thread.

        False when there is no one to send it to any more.
        """
        loop, channel = self._loop, self.channel
        if loop is None or channel is None or channel.transport is None or loop.is_closed():
            return False
        if threading.get_ident() == self._thread:
            return channel.write(frame)
        try:
            loop.call_soon_threadsafe(channel.write, frame)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True

    def _done(self, n: int, lags: list[float] | None) -> None:
        assert self.recorder is not None
        self.send(control_frame("done", n, lags, self.recorder.stats))

    def _written(self, records: list[Exchange]) -> None:
        assert self.recorder is not None
        self.send(written_frame([_thin(ex) for ex in records], self.recorder.stats))


class _Forward(logging.Handler):
    """Log records go to the serving process, which logs them as its own (its handlers, its scrubber)."""

    def __init__(self, child: Child, scrubbers: list[logging.Filter]) -> None:
        super().__init__()
        self.child = child
        self.fallback = logging.StreamHandler()  # the serving process is gone: to stderr, scrubbed
        for scrubber in scrubbers:
            self.fallback.addFilter(scrubber)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                "name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                "msg": record.getMessage(), "created": record.created, "msecs": record.msecs,
                "exc_text": self.format_exception(record), "threadName": record.threadName,
                "processName": "writer", "process": record.process,
            }  # fmt: skip
            if not self.child.send(control_frame("log", fields)):
                self.fallback.handle(record)
        except Exception:  # noqa: BLE001 - logging must never break the writer
            self.handleError(record)

    @staticmethod
    def format_exception(record: logging.LogRecord) -> str | None:
        if record.exc_info and not record.exc_text:
            return logging.Formatter().formatException(record.exc_info)
        return record.exc_text


def _configure_logging(child: Child, levels: dict[str, int], scrubbers: list[logging.Filter]) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_Forward(child, scrubbers)]
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


def main(argv: list[str]) -> int:
    # The serving process decides when this one stops (``close``, or its end of the socket closing).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    loop = new_loop()
    try:
        loop.run_until_complete(Child(sock).run())
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
