"""The scenarios, and one round of one scenario against one target.

A round: the load generator starts and warms up (those requests are labelled ``LABEL-w``), the harness
waits until the warm-up is recorded, reads the target's CPU counters and resets its peak RSS, says go,
waits for the load to finish and (for a recording target) for every record to be in the database,
then reads the counters again. So CPU per request includes decoding and writing the record.

Invariants:
- Every round has a unique label (run id, scenario, repeat, target); records and upstream token totals
  are matched on it, so rounds never see each other's rows.
- Completeness is checked for every round through a recording proxy: rows == requests sent, rows for
  the warm-up == warm-up requests sent, and the database's token sum == the tokens the upstream reported
  for that label. A round that misses is kept (and reported as lost records), never retried.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from proxy.bench import loopwatch, procs
from proxy.bench.loadgen import LoadSpec
from proxy.bench.profile import Profiler
from proxy.bench.records import RecordCounter


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    stream: bool
    concurrency: int
    events: tuple[int, int] = (16, 16)
    pace_ms: int = 0
    duration: float = 5.0
    per_worker: int | None = None
    ramp: float = 0.0
    warmup: int = 20

    def quick(self) -> Scenario:
        if self.per_worker is not None:
            return replace(self, per_worker=1, ramp=min(self.ramp, 0.5), warmup=5)
        return replace(self, duration=min(self.duration, 1.0), ramp=min(self.ramp, 0.5), warmup=5)


def _paced_crowd(concurrency: int, per_worker: int) -> Scenario:
    """``concurrency`` paced streams at once, each ``per_worker`` times: the many-users scenarios."""
    return Scenario(
        f"paced-c{concurrency}",
        f"Paced streams, 50-100 events x 20 ms, {concurrency} concurrent",
        stream=True,
        concurrency=concurrency,
        events=(50, 100),
        pace_ms=20,
        per_worker=per_worker,
        ramp=1.0,
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("nonstream-c1", "Non-streamed, concurrency 1", stream=False, concurrency=1),
        Scenario("nonstream-c32", "Non-streamed, concurrency 32", stream=False, concurrency=32),
        Scenario(
            "fast-streams-c32",
            "Fast streams (200 events, unpaced), concurrency 32",
            stream=True,
            concurrency=32,
            events=(200, 200),
        ),
        # Streams start spread over one stream's length, as independent users' would, not in lockstep.
        Scenario(
            "paced-50ev-c32",
            "Paced streams, 50 events x 20 ms, concurrency 32",
            stream=True,
            concurrency=32,
            events=(50, 50),
            pace_ms=20,
            ramp=1.0,
        ),
        _paced_crowd(200, per_worker=3),
        _paced_crowd(500, per_worker=2),
    )
}


@dataclass
class Target:
    """Somewhere to send the load: the upstream itself, our proxy, or a peer proxy."""

    name: str
    kind: str  # "direct", "proxy" (records), "passthrough" (our proxy, recording off) or "peer"
    service: procs.Service
    records: RecordCounter | None = None  # set when the target records
    loop_file: Path | None = None  # where ``loopwatch`` samples the target's serving loop (our one-worker proxies)


@dataclass
class RoundResult:
    scenario: str
    repeat: int
    target: str
    kind: str
    load: dict[str, Any]
    cpu_ms_per_request: float | None
    cpu_s: float
    upstream_cpu_ms_per_request: float | None
    peak_rss_mb: float
    rss_after_mb: float
    peak_reset: bool
    records: dict[str, Any] | None = None
    profile: dict[str, Any] | None = field(default=None)
    # Our proxies: CPU of the serving thread and of the others (the recorder's), per request.
    serving_cpu_ms_per_request: float | None = None
    recording_cpu_ms_per_request: float | None = None
    # The longest the serving loop was held during the round (``loopwatch``), in ms.
    loop_stall: dict[str, float] | None = None
    # What the proxy's health says about its recorder after the round (lag, queue depth).
    recorder: dict[str, Any] | None = None


class LoadProcess:
    """One load-generator process for one round."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> dict[str, Any]:
        self.proc = await asyncio.create_subprocess_exec(
            procs.PY,
            "-m",
            "proxy.bench.loadgen",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(msgspec.json.encode(self.spec) + b"\n")
        await self.proc.stdin.drain()
        return await self._line()

    async def go(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()
        result = await self._line()
        await self.proc.wait()
        return result

    async def _line(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise RuntimeError(f"load generator failed: {err.decode(errors='replace')[-2000:]}")
        return msgspec.json.decode(line)


async def upstream_stats(upstream: procs.Service) -> dict[str, dict[str, int]]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{upstream.port}/_bench/stats") as r:
        return await r.json()


async def recorder_health(target: Target) -> dict[str, Any] | None:
    """The recorder's figures from our proxy's ``/_proxy/health`` (lag and queue depth where it has them)."""
    url = f"http://127.0.0.1:{target.service.port}/_proxy/health"
    try:
        async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(10)) as r:
            health = await r.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    rec = health.get("recorder") or {}
    keep = ("queue_depth", "queue_max_depth", "max_queue_depth", "lag_ms", "dropped", "spooled", "overflowed")
    return {k: rec[k] for k in keep if k in rec}


class Internals:
    """What a round reads inside our proxy: CPU per thread kind, loop holds, the recorder's state."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.ours = target.kind in ("proxy", "passthrough")
        self.split0 = self.split1 = procs.thread_cpu_seconds(target.service.pid) if self.ours else (0.0, 0.0)
        self.since = self.until = time.time()

    def stop(self) -> None:
        """Read the counters when the round's CPU is read (the load done and every record written)."""
        if self.ours:
            self.split1 = procs.thread_cpu_seconds(self.target.service.pid)
            self.until = time.time()

    async def fill(self, r: RoundResult, sent: int) -> None:
        if not self.ours or not sent:
            return
        r.serving_cpu_ms_per_request = round((self.split1[0] - self.split0[0]) * 1000 / sent, 4)
        r.recording_cpu_ms_per_request = round((self.split1[1] - self.split0[1]) * 1000 / sent, 4)
        if self.target.loop_file is not None:
            r.loop_stall = loopwatch.window(self.target.loop_file, self.since, self.until)
        if self.target.kind == "proxy":
            r.recorder = await recorder_health(self.target)


# What a scenario says of its load goes to the load generator as it is: every field the two share, by name.
_LOAD_FIELDS = tuple(f.name for f in fields(Scenario) if f.name in LoadSpec.__struct_fields__)


def load_spec(scenario: Scenario, target: Target, *, label: str, client_usage: bool) -> LoadSpec:
    shape = {name: getattr(scenario, name) for name in _LOAD_FIELDS}
    return LoadSpec(url=target.service.url + "/chat/completions", label=label, client_usage=client_usage, **shape)


async def run_round(
    scenario: Scenario,
    target: Target,
    upstream: procs.Service,
    *,
    label: str,
    repeat: int,
    client_usage: bool,
    record_timeout: float = 120.0,
    profiler: Profiler | None = None,
) -> RoundResult:
    spec = load_spec(scenario, target, label=label, client_usage=client_usage)
    load = LoadProcess(spec)
    await load.start()
    warm_label = label + "-w"
    records = target.records
    if records is not None:
        await records.wait_for({warm_label: scenario.warmup}, record_timeout)
    pid = target.service.pid
    peak_reset = procs.reset_peak(pid)
    cpu0, up_cpu0 = procs.cpu_seconds(pid), procs.cpu_seconds(upstream.pid)
    internals = Internals(target)
    if profiler is not None:
        profiler.start()
    result = await load.go()
    record_check = None
    if records is not None:
        started = time.monotonic()
        await records.wait_for({label: result["sent"]}, record_timeout)
        drain_s = time.monotonic() - started
    if profiler is not None:
        profiler.stop()
    cpu = procs.cpu_seconds(pid) - cpu0
    internals.stop()
    up_cpu = procs.cpu_seconds(upstream.pid) - up_cpu0
    peak = procs.peak_rss_mb(pid)
    if records is not None:
        stats = await upstream_stats(upstream)
        record_check = await records.check(
            {label: result["sent"], warm_label: result["warmup_sent"]}, stats, drain_s=drain_s
        )
    sent = result["sent"]
    out = RoundResult(
        scenario=scenario.name,
        repeat=repeat,
        target=target.name,
        kind=target.kind,
        load=result,
        cpu_ms_per_request=round(cpu * 1000 / sent, 4) if sent and target.kind != "direct" else None,
        cpu_s=round(cpu, 3),
        upstream_cpu_ms_per_request=round(up_cpu * 1000 / sent, 4) if sent else None,
        peak_rss_mb=round(peak, 1),
        rss_after_mb=round(procs.rss_mb(pid), 1),
        peak_reset=peak_reset,
        records=record_check,
    )
    await internals.fill(out, sent)
    return out
