"""CPU and instructions per request (or stream) of one proxy process: small before/after comparisons.

``python -m proxy.bench.hotpath [-n 3000] [-c 1,32] [--modes record,passthrough] [--tree NAME=DIR ...] [--rounds 3]
[--events N [--pace-ms MS]]``

Starts the benchmark upstream and one proxy per mode and checkout (this one, and each ``--tree``: the
same modes run from that checkout, its ``proxy`` package first on PYTHONPATH), then runs rounds in turn
(A B A B ...: a machine that drifts moves every target alike). A round sends ``-n`` requests of the
benchmark's shape at concurrency ``-c`` and waits until the proxy says every record is written
(``/_proxy/health``), so the figures include the writer's work. ``--events N`` sends streams of ``N``
events instead (``--pace-ms`` apart: with a pace each event is one read of its own, as a model's
tokens are). Per request (or stream) it prints the CPU the proxy's threads used (``/proc``: the serving
loop's thread, and the writer's and the others'), and with ``--callgrind`` the instructions of the
serving process (run under valgrind, about 50 times slower: use a small ``-n``; a writer process is not
counted). On a shared 2-core machine instructions move a few tenths of a percent from round
to round where time moves ten percent or more.

Invariants: measures only (no figure is asserted; the exit code is 1 when a request failed); every
process it starts is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from proxy.bench.loadgen import LoadSpec, Run
from proxy.bench.procs import PY, Service, free_port, thread_cpu_seconds


@dataclass
class Target:
    name: str
    mode: str
    service: Service
    loop_ms: list[float] = field(default_factory=list)
    other_ms: list[float] = field(default_factory=list)
    kinstr: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    callgrind: Path | None = None  # the proxy runs under callgrind, dumping here
    failed: int = 0


class Counter:
    """Instructions a proxy runs for the length of a round: ``callgrind`` counts them (``--callgrind``).

    The proxy runs under callgrind with counting off; a round zeroes the counters and turns counting on,
    and at its end turns it off and dumps: the dump's total is that round's (both threads, all of it).
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        if target.callgrind is not None:
            self._control("--zero")
            self._control("--instr=on")

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.target.service.pid)], capture_output=True, check=True)

    def stop(self) -> float | None:
        out = self.target.callgrind
        if out is None:
            return None
        self._control("--instr=off")
        before = set(out.parent.glob(out.name + "*"))
        self._control("--dump")
        dumps = sorted(set(out.parent.glob(out.name + "*")) - before, key=lambda p: p.stat().st_mtime)
        for line in dumps[-1].read_text().splitlines() if dumps else ():
            if line.startswith("totals:"):
                return float(line.split()[1])
        return None


async def _written(session: aiohttp.ClientSession, target: Target) -> int:
    async with session.get(f"http://127.0.0.1:{target.service.port}/_proxy/health") as resp:
        return int((await resp.json())["recorder"]["written"])


async def _settled(session: aiohttp.ClientSession, target: Target, at_least: int) -> None:
    """Until the proxy has written ``at_least`` records (a passthrough proxy writes none: a short pause)."""
    if target.mode != "record":
        await asyncio.sleep(0.2)
        return
    deadline = time.monotonic() + 60
    while await _written(session, target) < at_least and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _round(target: Target, n: int, concurrency: int, sent: dict[str, int], shape: dict[str, Any]) -> None:
    url = target.service.url + "/chat/completions"
    spec = LoadSpec(url=url, label=f"hotpath-{target.name}", concurrency=concurrency, **shape)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        run = Run(spec, session)
        # Warm the connections and the proxy's caches (fewer streams: under callgrind each takes seconds).
        for _ in range(max(concurrency, 8 if spec.stream else 50)):
            await run.one(spec.label)
        sent[target.name] += run.sent
        await _settled(session, target, sent[target.name])
        pid = target.service.pid
        loop0, other0 = thread_cpu_seconds(pid)
        counter = Counter(target)
        run = Run(spec, session)
        started = time.perf_counter()
        per_worker = n // concurrency
        await asyncio.gather(*(_worker(run, per_worker, spec.label) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        sent[target.name] += run.sent
        await _settled(session, target, sent[target.name])
        instructions = counter.stop()
        loop1, other1 = thread_cpu_seconds(pid)
    done = per_worker * concurrency
    if run.ok != done:
        target.failed += done - run.ok
        print(f"  {target.name}: {done - run.ok} of {done} requests failed: {dict(run.errors)}")
    target.loop_ms.append((loop1 - loop0) * 1000 / done)
    target.other_ms.append((other1 - other0) * 1000 / done)
    target.rps.append(done / elapsed)
    if instructions is not None:
        target.kinstr.append(instructions / 1000 / done)


async def _worker(run: Run, count: int, label: str) -> None:
    for _ in range(count):
        await run.one(label)


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):8.3f}" if values else "       -"


def _report(targets: list[Target], concurrency: int, unit: str) -> None:
    print(f"concurrency {concurrency} (medians over rounds; ms and k-instructions per {unit})")
    print(f"  {'target':28} {'loop ms':>8} {'other ms':>8} {'total ms':>8} {'k-instr':>8} {'req/s':>8}")
    for t in targets:
        total = [a + b for a, b in zip(t.loop_ms, t.other_ms, strict=True)]
        kinstr = f"{statistics.median(t.kinstr):8.1f}" if t.kinstr else "       -"
        print(
            f"  {t.name:28} {_median(t.loop_ms)} {_median(t.other_ms)} {_median(total)} {kinstr}"
            f" {statistics.median(t.rps):8.0f}"
        )


def _start(name: str, mode: str, src: Path, upstream: Service, work: Path, callgrind: bool) -> Target:
    port = free_port()
    db = work / f"{name}.db"
    cmd = [PY, "-m", "proxy", "serve", "--upstream", upstream.url, "--listen", f"127.0.0.1:{port}"]
    cmd += ["--db", f"sqlite+aiosqlite:///{db}", "--mode", mode]
    out = work / f"callgrind-{name}.out" if callgrind else None
    if out is not None:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *cmd]
    env = {"PYTHONPATH": str(src), "PROXY_LOG_LEVEL": "WARNING", "PROXY_RECORDER_SPOOL_DIR": str(work / name)}
    if callgrind:
        # About 50 times slower: batches gather about as many records as they would at full speed.
        env["PROXY_RECORDER_BATCH_DELAY"] = "2.0"
    service = Service(name, cmd, port, work, env=env)
    service.start(timeout=600 if callgrind else 60)
    return Target(name, mode, service, callgrind=out)


async def run(args: argparse.Namespace) -> int:
    """Run the rounds and print the figures; 1 when any request failed."""
    work = Path(tempfile.mkdtemp(prefix="hotpath-"))
    up_port = free_port()
    upstream = Service("upstream", [PY, "-m", "proxy.bench.upstream", "--port", str(up_port)], up_port, work)
    upstream.start()
    trees = [(name + "-", Path(src).resolve()) for name, _, src in (t.partition("=") for t in args.tree)]
    trees.append(("", Path(__file__).parents[2]))
    targets: list[Target] = []
    try:
        for prefix, src in trees:
            for mode in args.modes:
                targets.append(_start(f"{prefix}{mode}", mode, src, upstream, work, args.callgrind))
        sent = {t.name: 0 for t in targets}
        shape: dict[str, Any] = {}
        if args.events:
            shape = {"stream": True, "events": (args.events, args.events), "pace_ms": args.pace_ms}
        for concurrency in args.concurrency:
            for t in targets:
                t.loop_ms, t.other_ms, t.kinstr, t.rps = [], [], [], []
            for _ in range(args.rounds):
                for t in targets:
                    await _round(t, args.n, concurrency, sent, shape)
            _report(targets, concurrency, f"{args.events}-event stream" if args.events else "request")
        return 1 if any(t.failed for t in targets) else 0
    finally:
        for t in targets:
            t.service.stop()
        upstream.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


def _natural(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return number


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m proxy.bench.hotpath", description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="requests per round")
    parser.add_argument("-c", "--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[1, 32])
    parser.add_argument("--modes", type=lambda v: v.split(","), default=["record", "passthrough"])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target and concurrency")
    parser.add_argument("--callgrind", action="store_true", help="count instructions (proxies run under callgrind)")
    parser.add_argument("--events", type=_natural, default=0, help="send streams of this many events (0: not streamed)")
    parser.add_argument("--pace-ms", type=_natural, default=0, help="gap between a stream's events")
    parser.add_argument(
        "--tree", action="append", default=[], metavar="NAME=DIR", help="also run the proxy from this checkout"
    )
    args = parser.parse_args()
    if args.pace_ms and not args.events:
        parser.error("--pace-ms paces a stream's events: give --events N too")
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
