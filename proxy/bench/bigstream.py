"""One huge stream read by a fast client: the proxy's memory high-water mark and its longest loop stall.

``python -m proxy.bench.bigstream [--mib 400] [--event-bytes 1000] [--proxy-src DIR] [--relay|--no-relay]``

Starts the benchmark upstream and the proxy (record mode, SQLite in a temporary directory) as their
own processes, streams ``--mib`` MiB of chat chunks directly and then through the proxy to a client
that reads as fast as it can, and meanwhile sends ``GET /_proxy/health`` to the proxy every
``--probe-ms`` ms. Probing goes on after the stream until its record is in the database, so decoding,
masking and writing the record are measured too. Prints the proxy's RSS before the stream and its
high-water mark (``VmHWM``) after, the slowest and the 99th-percentile probe, the stream's throughput
through the proxy as a ratio of direct, and what the record says (bytes passed, truncated, usage).

``--proxy-src DIR`` runs the proxy from another checkout (the same figures for an older commit; copy
this file and ``loopwatch.py`` into its ``proxy/bench/`` first). Inside the proxy ``loopwatch``
measures the longest stretch of CPU its event-loop thread spent between two 2 ms ticks: what a step
held the loop, without the waits for a core that a busy machine adds to every wall-clock figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp

from proxy.bench import loopwatch
from proxy.bench.procs import PY, Service, free_port, peak_rss_mb, rss_mb
from proxy.bench.upstream import stream_parts

PROBE_TIMEOUT = 60.0
CONTROL_SECONDS = 5.0


async def read_stream(url: str, events: int, event_bytes: int) -> tuple[int, float]:
    """Bytes read and seconds taken for one stream, read as fast as the socket gives them."""
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "go"}], "stream": True}
    headers = {"x-bench-events": str(events), "x-bench-event-bytes": str(event_bytes), "Authorization": "Bearer x"}
    started = time.perf_counter()
    total = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{url}/chat/completions", json=body, headers=headers) as resp,
    ):
        async for data in resp.content.iter_any():
            total += len(data)
    return total, time.perf_counter() - started


async def probe(url: str, every: float) -> None:
    """``--probe URL``: ``GET /_proxy/health`` every ``every`` seconds until stdin closes; prints the seconds."""
    out: list[float] = []
    closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as http:
        print("ready", flush=True)
        while not closed.done():
            started = time.perf_counter()
            async with http.get(f"{url}/_proxy/health") as resp:
                await resp.read()
            out.append(time.perf_counter() - started)
            await asyncio.sleep(every)
    print(json.dumps(out))


async def start_probe(url: str, every: float) -> asyncio.subprocess.Process:
    # A process of its own: in the client's process the probe would measure the client's loop too.
    cmd = [PY, "-m", "proxy.bench.bigstream", "--probe", url, "--probe-ms", str(every * 1000)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=PIPE, stdout=PIPE)
    assert proc.stdout is not None
    await proc.stdout.readline()  # started (imports take seconds on a busy machine)
    return proc


async def stop_probe(proc: asyncio.subprocess.Process) -> list[float]:
    out, _ = await proc.communicate(b"")
    return sorted(json.loads(out))


def recorded(db: Path, skip: int = 0) -> tuple[int | None, bool, int | None, str] | None:
    """What the record of the stream says, once it is written: bytes passed, truncated, tokens, outcome.

    The newest streamed record, or ``skip`` records before it.
    """
    for columns in ("b.response_bytes, b.response_truncated", "NULL, NULL"):  # the second: before schema 0005
        try:
            with sqlite3.connect(db) as conn:
                row = conn.execute(
                    f"SELECT {columns}, e.completion_tokens, e.outcome"
                    " FROM exchanges e JOIN exchange_bodies b ON b.exchange_id = e.id WHERE e.stream"
                    " ORDER BY e.started_at DESC LIMIT 1 OFFSET ?",
                    (skip,),
                ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such column" in str(exc):
                continue
            return None
        return None if row is None else (row[0], row[1], row[2], row[3])
    return None


async def through_proxy(proxy: Service, db: Path, events: int, event_bytes: int, every: float) -> dict[str, object]:
    base = f"http://127.0.0.1:{proxy.port}"
    # A first record compiles the writer's statements and imports what it uses: once per process.
    await read_stream(base + "/v1", 10, 10)
    while recorded(db) is None:
        await asyncio.sleep(0.1)
    # The control: the same probe against the idle proxy (on a busy machine, the noise floor).
    idle_probes = await start_probe(base, every)
    await asyncio.sleep(CONTROL_SECONDS)
    idle = await stop_probe(idle_probes)
    probes = await start_probe(base, every)
    measured_from = time.time()
    await asyncio.sleep(1.0)
    before = rss_mb(proxy.pid)
    size, seconds = await read_stream(base + "/v1", events, event_bytes)
    stream_end = time.perf_counter()
    record = None
    while record is None and time.perf_counter() - stream_end < 300:
        await asyncio.sleep(0.1)
        record = recorded(db) if recorded(db, skip=1) is not None else None  # the warm-up's and this one
    await asyncio.sleep(1.0)
    latencies = await stop_probe(probes)
    return {
        "rss_before_mb": before,
        "rss_peak_mb": peak_rss_mb(proxy.pid),
        "bytes": size,
        "seconds": seconds,
        "recorded_after_s": time.perf_counter() - stream_end - 1.0,
        "record": record,
        "probes": len(latencies),
        "probe_max_ms": latencies[-1] * 1000,
        "probe_p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "probe_median_ms": statistics.median(latencies) * 1000,
        "idle": _summary(idle),
        "measured_from": measured_from,
    }


def _summary(latencies: list[float]) -> str:
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    return (
        f"median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" slowest {latencies[-1] * 1000:.1f} ms ({len(latencies)} probes)"
    )


async def run(args: argparse.Namespace) -> None:
    content = stream_parts(args.event_bytes)[1]
    events = max(1, (args.mib << 20) // len(content))
    work = Path(tempfile.mkdtemp(prefix="bigstream-"))
    db = work / "bench.db"
    up_port = free_port()
    upstream = Service("upstream", [PY, "-m", "proxy.bench.upstream", "--port", str(up_port)], up_port, work)
    port = free_port()
    samples = work / "loop.jsonl"
    cmd = [*loopwatch.command(samples), "serve", "--upstream", upstream.url, "--listen", f"127.0.0.1:{port}"]
    if args.relay is not None:
        cmd.append("--relay" if args.relay else "--no-relay")
    env = {
        "PYTHONPATH": os.pathsep.join(
            filter(
                None, [str(Path(args.proxy_src).resolve()) if args.proxy_src else "", str(Path(__file__).parents[2])]
            )
        ),
    }
    proxy = Service("proxy", [*cmd, "--db", f"sqlite+aiosqlite:///{db}"], port, work, env=env)
    upstream.start()
    proxy.start()
    try:
        direct_bytes, direct_s = await read_stream(upstream.url, events, args.event_bytes)
        result = await through_proxy(proxy, db, events, args.event_bytes, args.probe_ms / 1000)
    finally:
        proxy.stop()
        upstream.stop()
    mib = direct_bytes / (1 << 20)
    print(f"stream: {mib:.0f} MiB in {events} events of {args.event_bytes} content bytes")
    print(
        f"direct: {mib / direct_s:.0f} MiB/s; through the proxy: {result['bytes'] / (1 << 20) / result['seconds']:.0f}"
        f" MiB/s ({direct_s / result['seconds']:.2f}x of direct)"
    )  # type: ignore[operator]
    print(
        f"proxy RSS before the stream: {result['rss_before_mb']:.0f} MB;"
        f" high-water mark: {result['rss_peak_mb']:.0f} MB"
    )
    print(
        f"GET /_proxy/health every {args.probe_ms} ms ({result['probes']} probes, during the stream and until its"
        f" record was written {result['recorded_after_s']:.1f} s after it): median {result['probe_median_ms']:.1f} ms,"
        f" p99 {result['probe_p99_ms']:.1f} ms, slowest {result['probe_max_ms']:.1f} ms"
    )
    loop = loopwatch.window(samples, float(result["measured_from"]), time.time()) or {}  # type: ignore[arg-type]
    print(
        f"inside the proxy, the longest loop-thread CPU between two 2 ms ticks: {loop.get('cpu_ms', 0):.1f} ms"
        f" (wall clock, waits for a core included: {loop.get('wall_ms', 0):.1f} ms)"
    )
    print(f"the same probe against the idle proxy for {CONTROL_SECONDS:.0f} s (control): {result['idle']}")
    print(f"record (response_bytes, truncated, completion_tokens, outcome): {result['record']}")
    print(f"load average after the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=400, help="size of the stream")
    parser.add_argument("--event-bytes", type=int, default=1000, help="content characters per event")
    parser.add_argument("--probe-ms", type=float, default=10.0, help="gap between two probes")
    parser.add_argument("--proxy-src", help="run the proxy from this checkout (PYTHONPATH)")
    parser.add_argument(
        "--relay", action=argparse.BooleanOptionalAction, help="the proxy's response relay on or off (default: its own)"
    )
    parser.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)  # the probe process
    args = parser.parse_args()
    asyncio.run(probe(args.probe, args.probe_ms / 1000) if args.probe else run(args))


if __name__ == "__main__":
    main()
