"""``python -m proxy.bench``: run the benchmark, print the Markdown table, write JSON and Markdown files.

Exit code 0 when every round's records are complete, 1 when any record was lost (timing targets never
change the exit code: on a shared machine they are figures to read, not assertions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
from pathlib import Path

from proxy.bench import report
from proxy.bench.peers import PEER_NAMES
from proxy.bench.run import Options, command_line, run
from proxy.bench.scenarios import SCENARIOS


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m proxy.bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--db",
        action="append",
        metavar="URL",
        help="'sqlite' (a fresh file) or postgresql+asyncpg://... (a fresh database is created on that "
        "server); repeat to run each. Default: sqlite",
    )
    p.add_argument(
        "--scenarios", type=_csv, default=list(SCENARIOS), help=f"comma-separated subset of: {', '.join(SCENARIOS)}"
    )
    p.add_argument("--quick", action="store_true", help="short rounds, one repeat: to check the harness, not to quote")
    p.add_argument("--repeats", type=int, help="rounds per target and scenario (default 3, quick 1)")
    p.add_argument("--duration", type=float, help="seconds per round for the duration-based scenarios")
    p.add_argument(
        "--workers",
        type=lambda v: [int(x) for x in _csv(v)],
        default=None,
        help="proxy worker counts to compare (default 1,2; quick 1)",
    )
    p.add_argument(
        "--peers",
        nargs="?",
        const=",".join(PEER_NAMES),
        default="",
        type=str,
        help=f"also run other proxies when installed (default all of: {', '.join(PEER_NAMES)})",
    )
    p.add_argument(
        "--peer-bin",
        action="append",
        default=[],
        metavar="DIR",
        help="extra directory to look for peer binaries (e.g. a virtualenv's bin)",
    )
    p.add_argument(
        "--client-usage",
        action="store_true",
        help="clients ask for stream usage themselves (default: they do not, and the proxy injects it)",
    )
    p.add_argument(
        "--passthrough",
        action="store_true",
        help="also run a proxy that records nothing (proxy-norec): the cost of recording is the difference",
    )
    p.add_argument(
        "--relay-compare",
        action="store_true",
        help="run the proxy with the response relay on (--relay) and a twin with it off (proxy-norelay)",
    )
    p.add_argument(
        "--writer-compare",
        action="store_true",
        help="also run the proxy with its writer in a thread (--writer thread: proxy-thread)",
    )
    p.add_argument("--profile", action="store_true", help="one extra round per scenario under py-spy")
    p.add_argument("--no-write-rate", action="store_true", help="skip the database write-rate measurement")
    p.add_argument("--write-rate-n", type=int, help="records per writer for the write rate (default 5000, quick 500)")
    p.add_argument("--out", default="bench-results", help="directory for JSON, Markdown and work files")
    return p


def parse(argv: list[str] | None = None) -> Options:
    p = _parser()
    a = p.parse_args(argv)
    unknown = [s for s in a.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    peers = _csv(a.peers)
    bad = [x for x in peers if x not in PEER_NAMES]
    if bad:
        p.error(f"unknown peer(s): {', '.join(bad)}")
    return Options(
        dbs=a.db or ["sqlite"],
        scenarios=a.scenarios,
        repeats=a.repeats or (1 if a.quick else 3),
        quick=a.quick,
        duration=a.duration,
        workers=a.workers or ([1] if a.quick else [1, 2]),
        peers=peers,
        peer_bin=a.peer_bin,
        client_usage=a.client_usage,
        passthrough=a.passthrough,
        relay_compare=a.relay_compare,
        writer_compare=a.writer_compare,
        profile=a.profile,
        write_rate=not a.no_write_rate,
        write_rate_n=a.write_rate_n or (500 if a.quick else 5000),
        out=a.out,
        command=command_line(),
    )


def _raise_fd_limit() -> None:
    # 500 concurrent streams need ~1000 sockets in the proxy (client + upstream side) and as many in nginx.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    _raise_fd_limit()
    result = asyncio.run(run(opts))
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = result["meta"]["run_id"]
    md = report.markdown(result)
    (out / f"bench-{run_id}.json").write_text(json.dumps(result, indent=1))
    (out / f"bench-{run_id}.md").write_text(md)
    (out / "latest.json").write_text(json.dumps(result, indent=1))
    (out / "latest.md").write_text(md)
    print(md)
    print(f"bench: wrote {out / f'bench-{run_id}.json'} and .md", file=sys.stderr)
    lost = next((c for c in result["targets"] if c["target"].startswith("lost records")), None)
    return 1 if lost is not None and lost["pass"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
