"""Re-pricing stored exchanges and rebuilding the rollups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import Database, Proxy
from tests.support.traffic import cli_stdout, mixed_traffic


def row_cost(rows: list[dict[str, Any]], model: str) -> float:
    return sum(r["cost_usd"] for r in rows if r["model"] == model)


# The CLI reaches a per-test PostgreSQL schema only through the query-layer tests, so SQLite here.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_recompute_cost_reprices_and_rebuilds_rollups(proxy: Proxy, database: Database, tmp_path: Path) -> None:
    await mixed_traffic(proxy)
    config = tmp_path / "prices.toml"
    config.write_text('[pricing."fake-model"]\ninput = 1000.0\noutput = 2000.0\n')
    out = cli_stdout("usage", "--recompute-cost", "--config", str(config), "--db", database.url)
    assert "1 changed" in out
    rows = {
        r["model"]: r
        for r in json.loads(cli_stdout("usage", "--by", "model", "--format", "json", "--db", database.url))
    }
    row = next(r for r in await database.rows() if r["model"] == "fake-model")
    expected = (row["prompt_tokens"] * 1000.0 + row["completion_tokens"] * 2000.0) / 1e6
    assert rows["fake-model"]["cost_usd"] == pytest.approx(expected) and rows["fake-model"]["unknown_cost"] == 0
    assert rows["fake-openrouter"]["cost_usd"] == pytest.approx(row_cost(await database.rows(), "fake-openrouter"))
