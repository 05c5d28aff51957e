"""Replay with many recordings: start-up re-keying, hit latency, miss-explanation latency.

    python -m proxy.bench.replay [--recordings 5000] [--requests 300]

Fills a fresh SQLite database with synthetic recorded exchanges (keys made under other rules, so the
replay start-up must re-key them all), starts a replay-mode proxy on loopback and times requests to it.
Everything runs on this machine; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec
from aiohttp import web

from proxy.config import Settings
from proxy.forward.app import create_app
from proxy.forward.server import ProxyRunner
from proxy.record.exchange import Exchange
from proxy.replay.matchkey import KeyRules, match_key
from proxy.store import db, migrate
from proxy.store.writes import insert_exchanges

STALE = KeyRules(["bench-stale-rules"])


def exchange(i: int) -> Exchange:
    body = msgspec.json.encode(
        {"model": "m", "messages": [{"role": "user", "content": f"question number {i} " + "context " * 50}]}
    )
    reply = msgspec.json.encode(
        {"id": f"c{i}", "object": "chat.completion", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": f"answer {i}"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 60, "completion_tokens": 2, "total_tokens": 62}}
    )  # fmt: skip
    ex = Exchange(method="POST", path="/v1/chat/completions", session_id="bench", request_body=body)
    ex.status = ex.upstream_status = 200
    ex.response_headers = {"content-type": "application/json"}
    ex.response_body = reply
    ex.match_key = match_key(ex.method, ex.path, body, STALE)
    ex.finish()
    return ex


async def main(recordings: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        engine = db.create_engine(url)
        await db.enable_wal(engine)
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            for start in range(0, recordings, 500):
                await insert_exchanges(conn, [exchange(i) for i in range(start, min(start + 500, recordings))])
        settings = msgspec.convert(
            {"mode": "replay", "database": {"url": url}, "replay": {"timing": "instant"},
             "recorder": {"spool_dir": str(Path(tmp) / "spool")}},
            Settings,
        )  # fmt: skip
        runner = ProxyRunner(create_app(settings, engine), access_log=None)
        started = time.perf_counter()
        await runner.setup()  # runs the app's start-up: re-keys every recording
        startup = time.perf_counter() - started
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/s/bench/v1/chat/completions"
        hits, misses = [], []
        async with aiohttp.ClientSession() as http:
            for n in range(requests):
                body = exchange((n * 7919) % recordings).request_body
                t = time.perf_counter()
                async with http.post(base, data=body, headers={"content-type": "application/json"}) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                hits.append((time.perf_counter() - t) * 1000)
            for n in range(20):
                body = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": f"new {n}"}]})
                t = time.perf_counter()
                async with http.post(base, data=body) as resp:
                    await resp.read()
                    assert resp.status == 404
                misses.append((time.perf_counter() - t) * 1000)
        await runner.cleanup()
        await engine.dispose()
    print(f"recordings: {recordings}")
    print(f"start-up with re-keying all of them: {startup * 1000:.0f} ms")
    print(
        f"hit latency (cold key each time, {requests} requests): median {statistics.median(hits):.2f} ms, "
        f"p95 {sorted(hits)[int(len(hits) * 0.95)]:.2f} ms"
    )
    print(f"miss latency (explained against the 200 latest recordings): median {statistics.median(misses):.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.recordings, args.requests))
