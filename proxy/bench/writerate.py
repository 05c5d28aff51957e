"""How many exchanges per second a database takes: the limit on how many proxies can share it.

Two figures per backend and record kind (a small non-streamed exchange, a 50-event stream):
- ``insert``: already-decoded records written by 1 and 2 writer processes at once (as 1 or 2 proxy
  processes would), batches of ``batch_size`` in one transaction each, exactly as the recorder
  writes them: what the database takes from that many proxies. On a 2-core box the writers share
  the cores with the database server, so 2 writers show contention more than scaling.
- ``recorder``: records submitted to one ``Recorder`` that decodes (``finalize``) and writes them: what
  one proxy process's writer sustains, decoding included.

Invariants: every figure is checked by counting the rows written afterwards; records carry their own
session label, so the proxy rounds' counts are never disturbed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from asyncio.subprocess import PIPE
from typing import Any

import msgspec

from proxy.bench.records import RecordCounter
from proxy.bench.upstream import completion_body, stream_parts, usage_event
from proxy.record.exchange import Exchange, new_exchange_id
from proxy.record.recorder import Recorder
from proxy.store import db
from proxy.store.writes import insert_exchanges

REQUEST = b'{"model":"bench-model","messages":[{"role":"user","content":"Tell me something about benchmarks."}]}'


def template(kind: str) -> Exchange:
    """A realistic exchange as the proxy would have captured it, not yet decoded."""
    ex = Exchange(
        method="POST",
        path="/v1/chat/completions",
        request_headers={"content-type": "application/json", "authorization": "[redacted]", "user-agent": "bench"},
        request_body=REQUEST,
        key_fingerprint="fp_0123456789abcdef01234567",
        requested_model="bench-model",
        status=200,
        upstream_status=200,
    )
    if kind == "nonstream":
        ex.response_headers = {"content-type": "application/json"}
        ex.response_body = completion_body(16, 4)
    else:
        first, content, final, done = stream_parts(4)
        events = [first, *([content] * 50), final, usage_event(50), done]
        ex.stream = True
        ex.usage_injected = True
        ex.response_headers = {"content-type": "text/event-stream"}
        ex.response_body = b"".join(events)
        end = 0
        for i, event in enumerate(events):
            end += len(event)
            ex.stream_chunks.append((i * 20.0, end))
    ex.finish()
    return ex


def copies(ex: Exchange, n: int, label: str) -> list[Exchange]:
    return [msgspec.structs.replace(ex, id=new_exchange_id(), session_id=label) for _ in range(n)]


class WriterSpec(msgspec.Struct):
    url: str
    kind: str  # "nonstream" or "stream50"
    label: str
    n: int
    batch_size: int


async def _writer_process() -> None:
    """A writer process: for each spec on stdin, build its decoded records, say ready, write them on
    "go" and report the time; until stdin closes."""
    from proxy.record.decode import finalize

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    engine = None
    try:
        while line := await reader.readline():
            spec = msgspec.json.decode(line, type=WriterSpec)
            if engine is None:
                engine = db.create_engine(spec.url)
                async with engine.connect() as conn:  # open the pool's connection before any clock starts
                    await conn.exec_driver_sql("SELECT 1")
            items = copies(finalize(template(spec.kind)), spec.n, spec.label)
            batches = [items[i : i + spec.batch_size] for i in range(0, spec.n, spec.batch_size)]
            _emit({"ready": True})
            await reader.readline()
            started = time.perf_counter()
            for batch in batches:
                async with engine.begin() as conn:
                    await insert_exchanges(conn, batch)
            _emit({"elapsed": time.perf_counter() - started})
    finally:
        if engine is not None:
            await engine.dispose()


def _emit(obj: object) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(obj) + b"\n")
    sys.stdout.flush()


class _WriterPool:
    """Long-lived writer processes (started once: imports are slow on a busy box)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        for _ in range(self.size):
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "proxy.bench.writerate", stdin=PIPE, stdout=PIPE, stderr=PIPE
                )
            )

    async def rate(self, spec: WriterSpec, writers: int) -> float:
        """Exchanges/s that ``writers`` processes, each writing ``spec.n`` records, achieve together."""
        procs = self.procs[:writers]
        for proc in procs:
            _say(proc, msgspec.json.encode(spec))
        for proc in procs:
            await _line(proc)
        started = time.perf_counter()
        for proc in procs:
            _say(proc, b"go")
        for proc in procs:
            await _line(proc)
        return spec.n * writers / (time.perf_counter() - started)

    async def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()


def _say(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(data + b"\n")


async def _line(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stdout is not None and proc.stderr is not None
    out = await proc.stdout.readline()
    if not out:
        raise RuntimeError(f"writer process failed: {(await proc.stderr.read()).decode()[-2000:]}")
    return out


async def measure(url: str, run_id: str, spool_dir: str, *, n: int, batch_size: int = 500) -> dict[str, Any]:
    counter = RecordCounter(url)
    pool = _WriterPool(2)
    out: dict[str, Any] = {"n": n, "batch_size": batch_size}
    try:
        await pool.start()
        for kind in ("nonstream", "stream50"):
            for writers in (1, 2):
                label = f"{run_id}-write-{kind}-{writers}"
                rate = await pool.rate(WriterSpec(url, kind, label, n, batch_size), writers)
                rows = (await counter.counts([label]))[label]["rows"]
                out[f"insert_{kind}_{writers}w"] = {"per_s": round(rate), "rows_ok": rows == n * writers}
            label = f"{run_id}-write-{kind}-recorder"
            recorder = Recorder(counter.engine, batch_size=batch_size, spool_dir=spool_dir)
            await recorder.start()
            items = copies(template(kind), n, label)
            started = time.perf_counter()
            for ex in items:
                recorder.submit(ex)
            await recorder.flush()
            elapsed = time.perf_counter() - started
            await recorder.close()
            rows = (await counter.counts([label]))[label]["rows"]
            out[f"recorder_{kind}"] = {"per_s": round(n / elapsed), "rows_ok": rows == n}
    finally:
        await pool.close()
        await counter.close()
    return out


if __name__ == "__main__":
    asyncio.run(_writer_process())
