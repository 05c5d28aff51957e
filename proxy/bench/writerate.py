"""How many exchanges per second a database takes: the limit on how many proxies can share it.

Two figures per backend and record kind (a small non-streamed exchange, a 50-event stream):
- ``insert``: already-decoded records written by 1 and 2 concurrent writers (as 1 or 2 proxy
  processes would), batches of ``batch_size`` in one transaction each, exactly as the recorder
  writes them. This is what the database sustains, whatever the number of proxies.
- ``recorder``: records submitted to one ``Recorder`` that decodes (``finalize``) and writes them: what
  one proxy process's writer sustains, decoding included.

Invariants: every figure is checked by counting the rows written afterwards; records carry their own
session label, so the proxy rounds' counts are never disturbed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from proxy.bench.records import RecordCounter
from proxy.bench.upstream import completion_body, stream_parts, usage_event
from proxy.exchange import Exchange, new_exchange_id
from proxy.recorder import Recorder
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


async def _insert_rate(counter: RecordCounter, batches: list[list[Exchange]], writers: int) -> float:
    queue = list(batches)

    async def writer() -> None:
        while queue:
            batch = queue.pop()
            async with counter.engine.begin() as conn:
                await insert_exchanges(conn, batch)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return time.perf_counter() - started


async def measure(url: str, run_id: str, spool_dir: str, *, n: int, batch_size: int = 100) -> dict[str, Any]:
    from proxy.decode import finalize

    counter = RecordCounter(url)
    out: dict[str, Any] = {"n": n, "batch_size": batch_size}
    try:
        for kind in ("nonstream", "stream50"):
            base = template(kind)
            decoded = finalize(msgspec.structs.replace(base))
            for writers in (1, 2):
                label = f"{run_id}-write-{kind}-{writers}"
                items = copies(decoded, n, label)
                batches = [items[i : i + batch_size] for i in range(0, n, batch_size)]
                elapsed = await _insert_rate(counter, batches, writers)
                rows = (await counter.counts([label]))[label]["rows"]
                out[f"insert_{kind}_{writers}w"] = {"per_s": round(n / elapsed), "rows_ok": rows == n}
            label = f"{run_id}-write-{kind}-recorder"
            recorder = Recorder(counter.engine, batch_size=500, spool_dir=spool_dir)
            await recorder.start()
            items = copies(base, n, label)
            started = time.perf_counter()
            for ex in items:
                recorder.submit(ex)
            await recorder.flush()
            elapsed = time.perf_counter() - started
            await recorder.close()
            rows = (await counter.counts([label]))[label]["rows"]
            out[f"recorder_{kind}"] = {"per_s": round(n / elapsed), "rows_ok": rows == n}
    finally:
        await counter.close()
    return out
