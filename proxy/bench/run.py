"""The harness: start the upstream, the proxies and the peers, run the rounds, write the report.

Order of rounds, for each scenario and each repeat: ``direct``, ``proxy`` (one worker), ``proxy-Nw``
(N workers, for each extra worker count), each installed peer, then ``direct-again``. Alternating like
this spreads slow drifts of the machine (other load, thermal) over every target alike.

Invariants:
- Everything runs on loopback; every process started is stopped, also on failure or Ctrl-C.
- A PostgreSQL ``--db`` gets a fresh database of its own (created and dropped here), so a run never
  touches other data; when it cannot be created the given database is used and rows are told apart by
  their run-unique labels.
- The schema is made before any target starts (``_migrate``), so every proxy starts as a restart does.
- Peers run in the first database section only (they record nothing, the database does not matter).
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url

from proxy.bench import loopwatch, procs, profile, report, writerate
from proxy.bench.peers import find_peers
from proxy.bench.records import RecordCounter
from proxy.bench.scenarios import SCENARIOS, Scenario, Target, run_round
from proxy.commands.db import prepare_database
from proxy.config import load_settings
from proxy.store import db


@dataclass
class Options:
    dbs: list[str] = field(default_factory=lambda: ["sqlite"])
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    repeats: int = 3
    quick: bool = False
    duration: float | None = None
    workers: list[int] = field(default_factory=lambda: [1, 2])
    peers: list[str] = field(default_factory=list)
    peer_bin: list[str] = field(default_factory=list)
    client_usage: bool = False
    # Also run a one-worker proxy in passthrough mode: the cost of recording is the difference.
    passthrough: bool = False
    # Also run a one-worker proxy with the response relay off (``--no-relay``), the relay on in ``proxy``.
    relay_compare: bool = False
    writer_compare: bool = False
    profile: bool = False
    write_rate: bool = True
    write_rate_n: int = 5000
    out: str = "bench-results"
    work_dir: str | None = None
    command: str = ""


def scenario_list(opts: Options) -> list[Scenario]:
    out = []
    for name in opts.scenarios:
        s = SCENARIOS[name].quick() if opts.quick else SCENARIOS[name]
        if opts.duration is not None and s.per_worker is None:
            s = replace(s, duration=opts.duration)
        out.append(s)
    return out


def _meta(run_id: str, opts: Options) -> dict[str, Any]:
    import aiohttp as _aiohttp

    try:
        import uvloop

        uv: str | None = uvloop.__version__
    except ImportError:
        uv = None
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
            or None
        )
    return {
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiohttp": _aiohttp.__version__,
        "uvloop": uv,
        "commit": commit,
        "command": opts.command,
        "load_before": procs.load_average(),
    }


async def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the PostgreSQL server of ``url``; the URL of the new database."""
    await _admin_sql(url, f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str, name: str) -> None:
    await _admin_sql(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin_sql(url: str, statement: str) -> None:
    admin = db.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await admin.dispose()


async def _migrate(url: str) -> None:
    """The schema made before any target starts by ``proxy db upgrade``'s own step: every proxy then starts
    as it restarts in production, on a database at head, none carrying the migration's memory."""
    await prepare_database(load_settings(None, {"database": {"url": url}}), upgrade=True)


async def _fresh_postgres(url: str, run_id: str) -> tuple[str, str | None]:
    """A new database beside the one in ``url``; returns (url to use, name to drop or None)."""
    name = f"proxy_bench_{run_id}"
    try:
        return await create_database(url, name), name
    except Exception as exc:  # noqa: BLE001 - no CREATEDB right, etc.: fall back to labels
        print(
            f"bench: cannot create database {name} ({type(exc).__name__}); using {db.redacted_url(url)}",
            file=sys.stderr,
        )
        return url, None


def _proxy_service(
    name: str,
    upstream: procs.Service,
    url: str,
    workers: int,
    work: Path,
    mode: str = "record",
    extra: tuple[str, ...] = (),
) -> tuple[procs.Service, Path | None]:
    """Our proxy as users run it; a one-worker proxy runs under ``loopwatch`` (returned: its samples file)."""
    port = procs.free_port()
    listen = f"127.0.0.1:{port}"
    loop_file = work / f"loop-{name}.jsonl" if workers == 1 else None
    start = loopwatch.command(loop_file) if loop_file is not None else [procs.PY, "-m", "proxy"]
    cmd = [*start, "serve", "--upstream", upstream.url, "--listen", listen, "--db", url]
    cmd += ["--workers", str(workers), "--mode", mode, *extra]
    env = {"PROXY_LOG_LEVEL": "WARNING", "PROXY_RECORDER_SPOOL_DIR": str(work / "spool")}
    return procs.Service(name, cmd, port, work, env=env), loop_file


async def _wait_http(service: procs.Service, timeout: float = 90.0) -> None:
    """Peers such as LiteLLM open their port before they can answer; wait for a real answer."""

    async def ok() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(service.url + "/models", timeout=aiohttp.ClientTimeout(2)):
                return True
        except (aiohttp.ClientError, TimeoutError):
            return False

    if not await procs.wait_until(ok, timeout, 0.5):
        raise RuntimeError(f"{service.name} does not answer HTTP:\n{service.log_tail()}")


@dataclass
class _Section:
    """What one database's section runs against, and what it collects."""

    kind: str
    url: str
    work: Path
    services: list[procs.Service] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    counter: RecordCounter | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, Any] = field(default_factory=dict)

    def add(
        self, svc: procs.Service, kind: str, counter: RecordCounter | None = None, loop_file: Path | None = None
    ) -> None:
        self.services.append(svc)
        self.targets.append(Target(svc.name, kind, svc, counter, loop_file))

    def start_proxy(
        self, name: str, kind: str, upstream: procs.Service, workers: int = 1, extra: tuple[str, ...] = ()
    ) -> None:
        mode = "passthrough" if kind == "passthrough" else "record"
        svc, loop_file = _proxy_service(name, upstream, self.url, workers, self.work, mode, extra)
        svc.start()
        if kind == "proxy":
            self.counter = self.counter or RecordCounter(self.url)
        self.add(svc, kind, self.counter if kind == "proxy" else None, loop_file)

    def stop(self) -> None:
        for svc in self.services:
            svc.stop()


async def _start_targets(sec: _Section, opts: Options, upstream: procs.Service, *, with_peers: bool) -> None:
    sec.targets.append(Target("direct", "direct", upstream))
    # With --relay-compare the one-worker proxy runs with the relay on and a twin with it off.
    relay = ("--relay",) if opts.relay_compare else ()
    for w in opts.workers:
        sec.start_proxy("proxy" if w == 1 else f"proxy-{w}w", "proxy", upstream, w, relay)
    if opts.relay_compare:
        sec.start_proxy("proxy-norelay", "proxy", upstream, 1, ("--no-relay",))
    if opts.writer_compare:  # recording in a thread of the serving process, as before the writer process
        sec.start_proxy("proxy-thread", "proxy", upstream, 1, (*relay, "--writer", "thread"))
    if opts.passthrough:
        sec.start_proxy("proxy-norec", "passthrough", upstream, 1, relay)
    if with_peers and opts.peers:
        peers, sec.skipped = find_peers(opts.peers, upstream.port, sec.work, [Path(p) for p in opts.peer_bin])
        for svc in peers:
            try:
                svc.start(timeout=120)
                await _wait_http(svc)
            except RuntimeError as exc:
                last = [line for line in str(exc).splitlines() if line.strip()][-1:]
                sec.skipped[svc.name] = f"failed to start: {last[0] if last else exc}"[:300]
                svc.stop()
                continue
            sec.add(svc, "peer")
    sec.targets.append(Target("direct-again", "direct", upstream))


async def _run_scenario(sec: _Section, opts: Options, run_id: str, scenario: Scenario, upstream: procs.Service) -> None:
    for repeat in range(opts.repeats):
        for target in sec.targets:
            label = f"{run_id}-{sec.kind[:2]}-{scenario.name}-{repeat}-{target.name}"
            print(
                f"bench: {sec.kind} {scenario.name} repeat {repeat + 1}/{opts.repeats} {target.name}",
                file=sys.stderr,
                flush=True,
            )
            r = await run_round(scenario, target, upstream, label=label, repeat=repeat, client_usage=opts.client_usage)
            sec.rounds.append(asdict(r))
    proxy = next((t for t in sec.targets if t.name == "proxy"), None)
    if opts.profile and proxy is not None and profile.available():
        out = sec.work / f"profile-{scenario.name}.txt"
        prof = profile.Profiler(proxy.service.pid, out)
        label = f"{run_id}-{sec.kind[:2]}-{scenario.name}-profile"
        r = await run_round(
            scenario, proxy, upstream, label=label, repeat=-1, client_usage=opts.client_usage, profiler=prof
        )
        sec.profiles[scenario.name] = profile.summarize(out, r.load["sent"])
        sec.profiles[scenario.name]["records"] = r.records


async def run_section(
    opts: Options, run_id: str, db_url: str, upstream: procs.Service, work: Path, *, with_peers: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    kind = "sqlite" if db.is_sqlite(db_url) else "postgresql"
    section_work = work / kind
    section_work.mkdir(parents=True, exist_ok=True)
    drop = None
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{section_work / 'bench.db'}"
    else:
        url, drop = await _fresh_postgres(db_url, run_id)
    sec = _Section(kind, url, section_work)
    write_rate = None
    try:
        await _migrate(url)
        await _start_targets(sec, opts, upstream, with_peers=with_peers)
        for scenario in scenario_list(opts):
            await _run_scenario(sec, opts, run_id, scenario, upstream)
        sec.stop()
        if opts.write_rate:
            print(f"bench: {kind} database write rate", file=sys.stderr, flush=True)
            write_rate = await writerate.measure(url, run_id, str(section_work / "spool-wr"), n=opts.write_rate_n)
    finally:
        sec.stop()
        if sec.counter is not None:
            await sec.counter.close()
        if drop is not None:
            await drop_database(db_url, drop)
    streams = {s.name: s.stream for s in scenario_list(opts)}
    section = {
        "database": kind,
        "url": db.redacted_url(url),
        "rounds": sec.rounds,
        "summary": report.summarize(sec.rounds, streams),
        "write_rate": write_rate,
        "profiles": sec.profiles,
    }
    if opts.profile and not profile.available():
        section["profiles_skipped"] = "py-spy not installed (pip install py-spy)"
    return section, sec.skipped


async def run(opts: Options) -> dict[str, Any]:
    run_id = time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
    meta = _meta(run_id, opts)
    work = Path(opts.work_dir) if opts.work_dir else Path(opts.out) / f"work-{run_id}"
    work.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    upstream = procs.Service("upstream", [procs.PY, "-m", "proxy.bench.upstream", "--port", str(port)], port, work)
    upstream.start()
    sections: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    try:
        for i, db_url in enumerate(opts.dbs):
            url = "sqlite" if db_url == "sqlite" else db_url
            section, sk = await run_section(opts, run_id, url, upstream, work, with_peers=i == 0)
            sections.append(section)
            skipped.update(sk)
    finally:
        upstream.stop()
    meta["load_after"] = procs.load_average()
    result = {
        "meta": meta,
        "options": asdict(opts),
        "scenarios": {s.name: asdict(s) for s in scenario_list(opts)},
        "skipped_peers": skipped,
        "sections": sections,
    }
    result["targets"] = report.check_targets(sections)
    return result


def command_line() -> str:
    return "python -m proxy.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
