"""Fixtures of the store tests: a set of exchanges covering every grouping, written through the write path."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from proxy.config import Price
from proxy.record.exchange import Exchange, Outcome, Usage
from proxy.store.writes import insert_exchanges
from proxy.usage.pricing import PriceTable
from tests.support import Database

BASE = datetime(2026, 3, 1, tzinfo=UTC)
PRICES = PriceTable({"gpt-x": Price(input=2.0, cached_input=0.5, output=8.0)}, bundled=False)


def fixture_set() -> list[Exchange]:
    rng = random.Random(42)
    out = []
    models = [("gpt-x", "gpt-x-2026-01-01"), ("gpt-x", None), ("openai/gpt-x", "openai/gpt-x"), ("local", "local")]
    for i in range(60):
        requested, returned = models[i % 4]
        status = [200, 200, 200, 200, 200, 429, 499, 502][i % 8]
        started = BASE + timedelta(hours=rng.randrange(0, 72), minutes=rng.randrange(60), seconds=rng.random())
        ex = Exchange(
            started_at=started,
            session_id=[None, "suite-a", "suite-b"][i % 3],
            upstream="default" if i % 5 else "openrouter",
            requested_model=requested,
            key_fingerprint=[None, "fp_one", "fp_two"][i % 3 if i % 7 else 0],
            user=["alice", None][i % 2],
            api=["chat", "chat", "messages", "responses", "embeddings"][i % 5],
            method="POST",
            path="/v1/chat/completions",
            stream=bool(i % 2),
            status=status,
            upstream_status=200 if status == 499 else status,
            duration_ms=rng.uniform(5, 5000),
            ttft_ms=rng.uniform(1, 800) if i % 2 and status in (200, 499) else None,
        )
        ex.finished_at = started + timedelta(milliseconds=ex.duration_ms or 0)
        if status == 499:
            ex.outcome = Outcome.CLIENT_DISCONNECTED
        elif status == 502:
            ex.outcome = Outcome.UPSTREAM_UNREACHABLE
        elif i % 11 == 0:
            ex.outcome = Outcome.UPSTREAM_CUT  # a 200 that was cut: an error with status 200
        if status == 200 and i % 13 != 0:  # some successes report no usage at all
            prompt, completion = rng.randint(10, 900), rng.randint(1, 300)
            ex.usage = Usage.from_provider(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=prompt // 3 if i % 3 else None,
                reasoning_tokens=completion // 4,
                cache_write_tokens=prompt // 5 if ex.api == "messages" else None,
                cache_write_1h_tokens=prompt // 7 if ex.api == "messages" and i % 2 else None,
            )
            if i % 13 == 1:  # an upstream that reports only the total (a non-streamed Responses call, say)
                ex.usage = Usage.from_provider(total_tokens=prompt + completion)
            ex.provider_cost = 0.0042 if ex.upstream == "openrouter" else None
            ex.returned_model = returned
        PRICES.apply(ex)
        out.append(ex)
    return out


@pytest.fixture
async def recorded(database: Database) -> list[Exchange]:
    exs = fixture_set()
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, exs[:30])
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, exs[20:])  # overlaps: a spool replay must not count twice
    return exs
