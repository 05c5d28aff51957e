"""Export and import: byte-identical replay after a round trip, a stable versioned format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.replay.export import ExportError, import_records, jsonl, read_records, session_records
from proxy.replay.matchkey import DEFAULT_RULES
from tests.support import API_KEY, Database, ProxyFactory
from tests.support.traffic import MIXED_REQUESTS, recorded, send_all


async def test_export_import_replay_is_byte_identical(start_proxy: ProxyFactory, database: Database) -> None:
    received = await recorded(await start_proxy())
    records = await session_records(database.engine, "exp")
    text = jsonl("exp", records)
    fingerprint = (await database.rows())[0]["key_fingerprint"]
    assert fingerprint and fingerprint.encode() not in text
    assert API_KEY.encode() not in text and b"authorization" not in text.lower()

    lines = text.splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "llm-recording-proxy/exchanges" and header["version"] == 1
    assert header["exchanges"] == len(MIXED_REQUESTS) == len(lines) - 1
    first = json.loads(lines[1])
    assert list(first)[:4] == ["id", "session_id", "started_at", "finished_at"], "fixed field order"
    assert first["response"]["body"]["reads"][0][1] == ": OPENROUTER PROCESSING\r\n\r\n", "readable reads"
    plain = json.loads(lines[4])
    assert plain["request"]["body"]["json"]["temperature"] == 1, "requests are canonical"
    assert list(plain["request"]["body"]["json"]) == sorted(plain["request"]["body"]["json"])
    assert plain["response"]["body"]["json"]["choices"][0]["message"]["content"] == "Echo: plain "

    imported = list(read_records(text.splitlines(keepends=True)))
    assert await import_records(database.engine, imported, DEFAULT_RULES) == (0, len(MIXED_REQUESTS)), "idempotent"
    assert await import_records(database.engine, imported, DEFAULT_RULES, session="copy") == (len(MIXED_REQUESTS), 0)
    again = await session_records(database.engine, "copy")
    strip = ("id", "session_id")
    assert [
        {k: v for k, v in json.loads(jsonl("x", [r]).splitlines()[1]).items() if k not in strip} for r in again
    ] == [{k: v for k, v in json.loads(line).items() if k not in strip} for line in lines[1:]], (
        "re-exporting the import gives the same records"
    )

    replayer = await start_proxy(upstream_url="", mode="replay", replay={"timing": "instant"})
    assert await send_all(f"{replayer.url}/s/copy/v1") == received


def test_export_is_stable_and_versioned(tmp_path: Path) -> None:
    header = {"format": "llm-recording-proxy/exchanges", "version": 2}
    with pytest.raises(ExportError, match="version 2 was written by a newer proxy"):
        list(read_records([json.dumps(header).encode()]))
    with pytest.raises(ExportError, match="line 1: format 'x'"):
        list(read_records([b'{"format": "x"}']))
    with pytest.raises(ExportError, match="line 2"):
        list(read_records([json.dumps({**header, "version": 1}).encode(), b'{"id": 1}']))
