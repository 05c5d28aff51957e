"""``proxy usage``, ``proxy logs`` and ``proxy sessions`` as a user reads them: costs and durations without
float noise."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

from proxy.record.exchange import CostSource, Exchange
from proxy.store.writes import insert_exchanges
from tests.support import Database
from tests.support.cli import run_cli
from tests.support.reported import TOKEN_FIELDS, WHOLE_HOUR, hand_made


async def _seed(database: Database) -> None:
    batch = []
    for model, cost, duration in (("tiny", 2e-08, 3.8203440000188493), ("small", 5.0999999999999995e-06, 12.5)):
        ex = Exchange(method="POST", path="/v1/chat/completions", status=200, requested_model=model, session_id=model)
        ex.finish()
        ex.duration_ms, ex.cost_usd, ex.cost_source = duration, cost, CostSource.COMPUTED
        batch.append(ex)
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, batch)


async def test_usage_and_logs_show_costs_exactly(sqlite_db: Database, tmp_path: Path) -> None:
    await _seed(sqlite_db)

    def cli(*args: str) -> str:
        out = run_cli(*args, "--db", sqlite_db.url, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout

    usage_json = await asyncio.to_thread(cli, "usage", "--by", "model", "--format", "json")
    assert '"cost_usd":0.0000000200' in usage_json and '"cost_usd":0.0000051000' in usage_json
    assert json.loads(usage_json)[0]["cost_usd"] in (2e-08, 5.1e-06)
    logs_json = json.loads(await asyncio.to_thread(cli, "logs", "--format", "json"))
    assert sorted(r["duration_ms"] for r in logs_json) == [3.82, 12.5]
    tiny_json = json.loads(await asyncio.to_thread(cli, "logs", "--model", "tiny", "--format", "json"))
    assert [r["duration_ms"] for r in tiny_json] == [3.82], "the filters reach the query"
    sessions = json.loads(await asyncio.to_thread(cli, "sessions", "--model", "small", "--format", "json"))
    assert [(s["requests"], s["cost_usd"]) for s in sessions] == [(1, 5.1e-06)]
    table = await asyncio.to_thread(cli, "usage", "--by", "model")
    tiny = next(line for line in table.splitlines() if line.startswith("tiny"))
    assert "0.00000002" in tiny.split()
    rows = list(csv.DictReader(io.StringIO(await asyncio.to_thread(cli, "logs", "--format", "csv"))))
    assert sorted(r["cost_usd"] for r in rows) == ["0.0000000200", "0.0000051000"]
    assert sorted(r["duration_ms"] for r in rows) == ["12.5", "3.82"]


async def test_recompute_cost_prints_json_when_asked(sqlite_db: Database, tmp_path: Path) -> None:
    await _seed(sqlite_db)
    out = await asyncio.to_thread(
        run_cli, "usage", "--recompute-cost", "--format", "json", "--db", sqlite_db.url, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"examined": 2, "changed": 2, "days_rebuilt": 1}]


async def test_a_column_no_exchange_reported_is_null_in_every_grouping(sqlite_db: Database, tmp_path: Path) -> None:
    async with sqlite_db.engine.begin() as conn:
        await insert_exchanges(conn, hand_made())

    def cli(*args: str) -> str:
        out = run_cli("usage", *args, "--db", sqlite_db.url, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout

    for by in ("model", "model,hour", "model,day", "model,api", "model,session", "model,key", "model,status"):
        rows = json.loads(await asyncio.to_thread(cli, "--by", by, "--format", "json"))
        figures = {r["model"]: {n: (r[n], r[f"{n}_reported"]) for n in TOKEN_FIELDS} for r in rows}
        assert figures == WHOLE_HOUR, by
    [total] = json.loads(await asyncio.to_thread(cli, "--format", "json"))
    assert (total["prompt_tokens"], total["prompt_tokens_reported"], total["total_tokens"]) == (10, 1, 34)
    lines = (await asyncio.to_thread(cli, "--by", "model")).splitlines()
    head = lines[0].split()
    cells = {line.split()[0]: dict(zip(head, line.split(), strict=True)) for line in lines[1:]}
    assert (cells["t"]["prompt_tokens"], cells["t"]["total_tokens"], cells["m"]["prompt_tokens"]) == ("-", "12", "10")
