"""What ``kill -9`` loses at saturation: responses clients got as 200 that the database never saw.

``python -m proxy.bench.killloss [--db sqlite|postgres] [--clients 50] [--seconds 5] [--pg-url URL]
[--kill all|serving] [--writer process|thread]``

Starts the benchmark upstream and the proxy (record mode, default settings) as their own processes, runs
``--clients`` clients as fast as they can (non-streamed requests and 20-event streams, alternately) for
``--seconds``, then kills the proxy with SIGKILL while they are still sending: ``--kill all`` (the
default) every process of it at once, its writer process too (a container or cgroup killed); ``--kill
serving`` the serving process only (its process group, as an OOM kill or ``kill -9 PID`` would): its
writer process then writes what it was handed and exits, and the database is read after. Each 200
carries the record's id (``X-Proxy-Exchange-Id``) and the time the client had the whole response;
afterwards the database is read and every id it lacks is lost (those in the proxy's spool files are
counted apart: they are written at the next start). The age at the kill of the oldest lost record is set
against the README's bound: ``batch_delay`` (or, while the writer is busy, the write in progress, if
longer) plus one batch's write time, with the slowest batch health reported during the run for the write
time.
Health is polled every ``POLL`` seconds for the queue's high-water mark, the recorder's lag and its
batch times.

With ``--db postgres`` a database of its own is created (``killloss_<random>``) on the server of
``--pg-url`` and dropped afterwards; nothing else on that server is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import tempfile
import time
from pathlib import Path

import aiohttp

from proxy.bench.procs import PY, Service, descendants, free_port
from proxy.bench.run import create_database, drop_database

POLL = 0.25
BATCH_DELAY_MS = 50.0  # the proxy's default recorder.batch_delay, which this run keeps
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
KEY = "sk-bench-0123456789abcdef0123456789abcdef"


class Run:
    def __init__(self) -> None:
        self.got: dict[str, float] = {}  # exchange id -> perf_counter when the client had the whole response
        self.failed = 0
        self.health: list[dict] = []
        self.writer_done_s = 0.0  # from the kill until the processes left over (the writer) exited


async def client(http: aiohttp.ClientSession, url: str, run: Run, i: int, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        stream = (n + i) % 2 == 1
        n += 1
        body = {"model": "bench-model", "messages": [{"role": "user", "content": "go"}], "stream": stream}
        headers = {"Authorization": f"Bearer {KEY}", "x-bench-events": "20"}
        try:
            async with http.post(url, json=body, headers=headers) as resp:
                await resp.read()
                ex_id = resp.headers.get("x-proxy-exchange-id")
                if resp.status == 200 and ex_id:
                    run.got[ex_id] = time.perf_counter()
                else:
                    run.failed += 1
        except (TimeoutError, aiohttp.ClientError):
            run.failed += 1
            if stop.is_set():
                return
            await asyncio.sleep(0.01)


async def poll_health(base: str, run: Run, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while not stop.is_set():
            try:
                async with http.get(f"{base}/_proxy/health") as resp:
                    run.health.append((await resp.json())["recorder"])
            except (TimeoutError, aiohttp.ClientError, KeyError, ValueError):
                pass
            await asyncio.sleep(POLL)


async def load(proxy: Service, clients: int, seconds: float, kill: str) -> tuple[Run, float, float]:
    """Run the clients, kill the proxy at the end; the run, the kill's perf_counter and the load's length."""
    base = f"http://127.0.0.1:{proxy.port}"
    run = Run()
    stop, poll_stop = asyncio.Event(), asyncio.Event()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as http:
        for _ in range(3):  # warm-up: the writer's first batch compiles its statements
            async with http.post(f"{base}/v1/chat/completions", json={"model": "m", "messages": []}) as resp:
                await resp.read()
        await asyncio.sleep(0.5)
        poller = asyncio.create_task(poll_health(base, run, poll_stop))
        started = time.perf_counter()
        tasks = [asyncio.create_task(client(http, f"{base}/v1/chat/completions", run, i, stop)) for i in range(clients)]
        await asyncio.sleep(seconds)
        poll_stop.set()
        await poller
        killed_at = time.perf_counter()
        assert proxy.proc is not None
        writers = [p for p in descendants(proxy.proc.pid) if p != proxy.proc.pid]
        os.killpg(proxy.proc.pid, signal.SIGKILL)
        for pid in writers if kill == "all" else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proxy.proc.wait(10)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _gone(writers)
        run.writer_done_s = time.perf_counter() - killed_at
    return run, killed_at, killed_at - started


async def _gone(pids: list[int], timeout: float = 120.0) -> None:
    """Until every process left over (the writer, finishing what it was handed) has exited."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
            if ") Z " in stat:  # exited; its parent, killed, leaves it to init to reap
                break
            await asyncio.sleep(0.05)


async def stored_ids(url: str) -> set[str]:
    from proxy.store import db

    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            return {row[0] for row in await conn.exec_driver_sql("SELECT id FROM exchanges")}
    finally:
        await engine.dispose()


def spooled_ids(folder: Path) -> set[str]:
    from proxy.record.spool import Spool

    spool = Spool(folder, 1 << 40)
    return {ex.id for path in spool.files() for ex in spool.read(path)}


def report(
    args: argparse.Namespace, run: Run, killed_at: float, seconds: float, stored: set[str], spooled: set[str]
) -> None:
    missing = [i for i in run.got if i not in stored]
    in_spool = [i for i in missing if i in spooled]
    lost = [i for i in missing if i not in spooled]
    slowest_batch = max((h.get("last_batch_ms") or 0.0 for h in run.health), default=0.0)
    # A lost record waited for its batch at most batch_delay, or, when the writer was busy, the write in
    # progress; then its own batch was being written when the kill came.
    bound = max(BATCH_DELAY_MS, slowest_batch) + slowest_batch
    depth = max((h.get("max_queue_depth") or 0 for h in run.health), default=0)
    lags = [h["lag_ms"] for h in run.health if h.get("lag_ms", {}).get("p99") is not None]
    what = "every process" if args.kill == "all" else "the serving process"
    print(f"database: {args.db}; writer: {args.writer}; {args.clients} clients for {seconds:.1f} s;", end=" ")
    print(f"then kill -9 of {what}")
    if args.kill == "serving":
        print(f"the writer finished and exited {run.writer_done_s:.1f} s after the kill")
    print(f"responses the clients got as 200: {len(run.got)} ({len(run.got) / seconds:.0f}/s); failed: {run.failed}")
    share = 100 * len(lost) / max(1, len(run.got))
    print(f"missing from the database after the kill: {len(lost)} ({share:.1f} %), and {len(in_spool)} in the spool")
    if lost:
        oldest = max(killed_at - run.got[i] for i in lost) * 1000
        verdict = "within" if oldest <= bound else "PAST"
        print(f"oldest lost record ended {oldest:.0f} ms before the kill: {verdict} the bound of {bound:.0f} ms")
    print(
        f"bound: max(batch_delay {BATCH_DELAY_MS:.0f} ms, the batch in progress) + one batch's write;"
        f" the slowest batch write seen {slowest_batch:.0f} ms"
    )
    if lags:
        last = lags[-1]
        print(f"recorder lag at the last probe: p50 {last['p50']} ms, p99 {last['p99']} ms; max queue depth {depth}")
    print(f"load average after the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="killloss-"))
    pg_name = f"killloss_{secrets.token_hex(4)}"
    url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
    if args.db == "postgres":
        url = await create_database(args.pg_url, pg_name)
    up_port, port = free_port(), free_port()
    upstream = Service("upstream", [PY, "-m", "proxy.bench.upstream", "--port", str(up_port)], up_port, work)
    cmd = [PY, "-m", "proxy", "serve", "--upstream", upstream.url, "--listen", f"127.0.0.1:{port}", "--db", url]
    cmd += ["--writer", args.writer]
    proxy = Service("proxy", cmd, port, work)
    try:
        upstream.start()
        proxy.start()
        run, killed_at, seconds = await load(proxy, args.clients, args.seconds, args.kill)
        stored = await stored_ids(url)
        report(args, run, killed_at, seconds, stored, spooled_ids(work / "proxy-spool"))
    finally:
        proxy.stop()
        upstream.stop()
        if args.db == "postgres":
            await drop_database(args.pg_url, pg_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--kill", choices=["all", "serving"], default="all", help="what SIGKILL is sent to")
    parser.add_argument("--writer", choices=["process", "thread"], default="process", help="recorder.writer")
    parser.add_argument("--pg-url", default=os.environ.get("PROXY_TEST_POSTGRES_URL", PG_URL), help="admin URL")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main_async(args))
    except ImportError:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
