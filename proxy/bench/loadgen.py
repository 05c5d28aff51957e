"""The load generator: its own process, asyncio + uvloop + one aiohttp client session.

Protocol with the harness (one JSON object per line): the harness writes a ``LoadSpec`` on stdin; the
generator sets up (and runs its warm-up requests), prints ``{"ready": true}``, waits for a line on stdin,
runs the load and prints a ``LoadResult``. The harness reads the target's CPU counters between "ready"
and "go", so process start-up and warm-up never count.

Invariants:
- ``sent`` counts every request that left, ``ok + failed == sent`` once the run returns: workers stop
  starting requests at the deadline and the run waits for those in flight.
- A request is ``ok`` only with status 200 and a complete body (a stream must end with ``[DONE]``).
- Latency is from just before the request is sent to the last byte; TTFE (time to first event) is from
  the same start to the first read that carries an SSE event.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter

import aiohttp
import msgspec

API_KEY = "sk-bench-0123456789abcdef0123456789abcdef"


class LoadSpec(msgspec.Struct, kw_only=True):
    url: str  # the chat completions URL
    label: str  # sent as X-Proxy-Session (the database counts by it) and x-bench-label (the upstream)
    stream: bool = False
    concurrency: int = 1
    duration: float = 2.0  # seconds; ignored when per_worker is set
    per_worker: int | None = None  # exactly this many requests per worker
    events: tuple[int, int] = (50, 50)  # events per request, drawn uniformly in [lo, hi]
    event_bytes: int = 4
    pace_ms: int = 0
    ramp: float = 0.0  # workers start spread over this many seconds
    client_usage: bool = False  # ask for stream_options.include_usage as the client
    warmup: int = 0  # sequential requests before "ready", labelled LABEL-w
    timeout: float = 120.0
    seed: int = 1


class Summary(msgspec.Struct):
    n: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0


class LoadResult(msgspec.Struct, kw_only=True):
    label: str
    sent: int
    ok: int
    failed: int
    warmup_sent: int
    errors: dict[str, int]
    elapsed_s: float
    rps: float
    latency_ms: Summary
    ttfe_ms: Summary | None
    events: int
    events_per_s: float
    client_cpu_s: float


def summarize(values: list[float]) -> Summary:
    if not values:
        return Summary()
    s = sorted(values)
    n = len(s)

    def q(p: float) -> float:
        return round(s[min(n - 1, int(p * n))], 4)

    return Summary(n=n, mean=round(sum(s) / n, 4), p50=q(0.5), p90=q(0.9), p99=q(0.99), max=round(s[-1], 4))


def request_body(spec: LoadSpec) -> bytes:
    body: dict[str, object] = {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Tell me something about benchmarks."}],
    }
    if spec.stream:
        body["stream"] = True
        if spec.client_usage:
            body["stream_options"] = {"include_usage": True}
    return msgspec.json.encode(body)


class Run:
    def __init__(self, spec: LoadSpec, session: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.session = session
        self.body = request_body(spec)
        self.rng = random.Random(spec.seed)
        self.latencies: list[float] = []
        self.ttfes: list[float] = []
        self.errors: Counter[str] = Counter()
        self.sent = self.ok = self.events = 0

    def headers(self, label: str) -> dict[str, str]:
        lo, hi = self.spec.events
        return {
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": "application/json",
            "X-Proxy-Session": label,
            # The proxy keeps its control headers to itself, so the upstream counts by its own copy.
            "x-bench-label": label,
            "x-bench-events": str(self.rng.randint(lo, hi)),
            "x-bench-event-bytes": str(self.spec.event_bytes),
            "x-bench-pace-ms": str(self.spec.pace_ms),
        }

    async def one(self, label: str) -> None:
        headers = self.headers(label)
        self.sent += 1
        t0 = time.perf_counter()
        try:
            async with self.session.post(self.spec.url, data=self.body, headers=headers) as resp:
                if self.spec.stream:
                    ok = await self._read_stream(resp, t0)
                else:
                    await resp.read()
                    ok = True
                if resp.status != 200:
                    self.errors[f"status {resp.status}"] += 1
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[type(exc).__name__] += 1
            return
        if not ok:
            self.errors["stream without [DONE]"] += 1
            return
        self.ok += 1
        self.latencies.append((time.perf_counter() - t0) * 1000)

    async def _read_stream(self, resp: aiohttp.ClientResponse, t0: float) -> bool:
        tail = b""
        events = 0
        first = True
        async for data in resp.content.iter_any():
            if first:
                self.ttfes.append((time.perf_counter() - t0) * 1000)
                first = False
            events += (tail[-1:] + data).count(b"\n\n")
            tail = (tail + data)[-16:]
        self.events += events
        return tail.endswith(b"data: [DONE]\n\n")

    async def worker(self, index: int, deadline: float) -> None:
        spec = self.spec
        # A timed run keeps at least half its duration at full concurrency.
        ramp = spec.ramp if spec.per_worker is not None else min(spec.ramp, spec.duration / 2)
        if ramp:
            await asyncio.sleep(ramp * index / spec.concurrency)
        if spec.per_worker is not None:
            for _ in range(spec.per_worker):
                await self.one(spec.label)
            return
        while time.perf_counter() < deadline:
            await self.one(spec.label)


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = msgspec.json.decode(await reader.readline(), type=LoadSpec)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as s:
        run = Run(spec, s)
        for _ in range(spec.warmup):
            await run.one(spec.label + "-w")
        warmup_sent = run.sent
        run = Run(spec, s)
        _emit({"ready": True})
        await reader.readline()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        deadline = t0 + spec.duration
        await asyncio.gather(*(run.worker(i, deadline) for i in range(spec.concurrency)))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    result = LoadResult(
        label=spec.label,
        sent=run.sent,
        ok=run.ok,
        failed=run.sent - run.ok,
        warmup_sent=warmup_sent,
        errors=dict(run.errors),
        elapsed_s=round(elapsed, 4),
        rps=round(run.ok / elapsed, 2) if elapsed else 0.0,
        latency_ms=summarize(run.latencies),
        ttfe_ms=summarize(run.ttfes) if spec.stream else None,
        events=run.events,
        events_per_s=round(run.events / elapsed, 1) if elapsed else 0.0,
        client_cpu_s=round(cpu, 4),
    )
    _emit(msgspec.to_builtins(result))


def _emit(obj: object) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(obj) + b"\n")
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
