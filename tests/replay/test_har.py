"""HAR export of a recorded session."""

from __future__ import annotations

import json

import pytest

from proxy.replay.export import session_records
from proxy.replay.har import to_har
from tests.support import API_KEY, Database, ProxyFactory
from tests.support.traffic import MIXED_REQUESTS, recorded


async def test_har_export(start_proxy: ProxyFactory, database: Database) -> None:
    received = await recorded(await start_proxy())
    records = await session_records(database.engine, "exp")
    har = to_har(records, {"default": "https://user:pw@api.example.com/v1"}, "1.0")
    log = har["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "llm-recording-proxy"
    entries = log["entries"]
    assert len(entries) == len(MIXED_REQUESTS)
    first = entries[0]
    assert first["request"]["url"] == "https://api.example.com/v1/chat/completions"
    assert json.loads(first["request"]["postData"]["text"])["model"] == "fake-openrouter"
    # What each client received: for the streams that did not ask for usage, without the chunk the proxy asked for.
    assert [e["response"]["content"]["text"].encode() for e in entries] == received
    assert b'"usage":{' not in received[1] and entries[1]["response"]["bodySize"] == len(received[1])
    assert first["response"]["content"]["mimeType"].startswith("text/event-stream")
    assert first["timings"]["wait"] + first["timings"]["receive"] == pytest.approx(first["time"])
    assert entries[4]["response"]["status"] == 500 and entries[4]["response"]["statusText"] == "Internal Server Error"
    assert "pw@" not in json.dumps(har) and API_KEY not in json.dumps(har)
