"""The admin API through real traffic: auth rules, usage/exchanges/sessions JSON equal to the query layer
and the CLI, Prometheus metrics, and no admin route reachable through the /v1/ forwarder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import API_KEY, Database, Proxy, ProxyFactory

TOKEN = "admin-secret-token-123"


async def traffic(proxy: Proxy) -> None:
    client = proxy.client("/s/suite-1/v1")
    messages = [{"role": "user", "content": "count to three please"}]
    await client.chat.completions.create(model="fake-model", messages=messages)
    chunks = await client.chat.completions.create(model="fake-openrouter", messages=messages, stream=True)
    [c async for c in chunks]
    chunks = await client.chat.completions.create(model="fake-reasoning", messages=messages, stream=True)
    [c async for c in chunks]
    with pytest.raises(Exception):  # noqa: B017 - any SDK error type
        await client.chat.completions.create(model="fake-error-429", messages=messages)
    await proxy.recorder.flush()


async def get(proxy: Proxy, path: str, token: str | None = None) -> tuple[int, Any, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(proxy.url + path, headers=headers) as r:
        text = await r.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        return r.status, body, text


async def test_auth_rules(start_proxy: ProxyFactory) -> None:
    open_local = await start_proxy()
    assert (await get(open_local, "/_proxy/usage"))[0] == 200  # loopback, no token: open
    exposed = await start_proxy(listen="0.0.0.0:8080")
    status, body, _ = await get(exposed, "/_proxy/usage")
    assert status == 403 and body["error"]["code"] == "admin_disabled" and "admin_token" in body["error"]["message"]
    assert (await get(exposed, "/_proxy/dashboard"))[0] == 403
    assert (await get(exposed, "/_proxy/health"))[0] == 200  # health is always open
    guarded = await start_proxy(listen="0.0.0.0:8080", admin_token=TOKEN)
    for path in ("/_proxy/usage", "/_proxy/metrics", "/_proxy/exchanges", "/_proxy/sessions"):
        status, body, _ = await get(guarded, path)
        assert status == 401 and body["error"]["type"] == "authentication_error", path
        assert (await get(guarded, path, "wrong-token"))[0] == 401
        assert (await get(guarded, path, TOKEN))[0] == 200, path
    assert (await get(guarded, "/_proxy/dashboard"))[0] == 200  # the page has no data; it asks for the token


async def test_admin_routes_unreachable_through_the_forwarder(start_proxy: ProxyFactory, upstream: Any) -> None:
    proxy = await start_proxy(admin_token=TOKEN)
    for path in ("/v1/_proxy/usage", "/s/x/v1/_proxy/usage", "/_proxy/v1/usage"):
        status, body, _ = await get(proxy, path, TOKEN)
        assert not (isinstance(body, list)), path  # never the usage report
    status, body, _ = await get(proxy, "/_proxy/v1/usage", TOKEN)
    assert status == 404 and body["error"]["code"] == "unknown_upstream"
    # The forwarded ones reached the upstream as ordinary paths (and the token was forwarded, not consumed).
    assert (await get(proxy, "/v1/_proxy/usage", TOKEN))[0] == 404


async def test_api_matches_queries_and_cli(proxy: Proxy, database: Database, tmp_path: Path) -> None:
    await traffic(proxy)
    status, usage, _ = await get(proxy, "/_proxy/usage?by=model")
    assert status == 200
    by_model = {r["model"]: r for r in usage}
    assert set(by_model) == {"fake-model", "fake-openrouter", "fake-reasoning", "fake-error-429"}
    assert by_model["fake-openrouter"]["cost_usd"] > 0  # the provider's own cost, streamed
    assert by_model["fake-model"]["unknown_cost"] == 1 and by_model["fake-model"]["cost_usd"] is None
    assert by_model["fake-error-429"]["errors"] == 1 and by_model["fake-error-429"]["unknown_cost"] == 0
    assert by_model["fake-reasoning"]["cached_tokens"] > 0 and by_model["fake-reasoning"]["reasoning_tokens"] == 3
    status, totals, _ = await get(proxy, "/_proxy/usage?since=1h")
    assert totals[0]["requests"] == 4
    status, body, _ = await get(proxy, "/_proxy/usage?by=nope")
    assert status == 400 and "unknown grouping" in body["error"]["message"]
    status, body, _ = await get(proxy, "/_proxy/usage?since=yesterday")
    assert status == 400 and "expected an ISO date" in body["error"]["message"]
    status, page, _ = await get(proxy, "/_proxy/exchanges?limit=2")
    assert len(page["data"]) == 2 and page["has_more"]
    status, detail, _ = await get(proxy, f"/_proxy/exchanges/{page['data'][0]['id']}")
    assert detail["request"]["body"]["messages"][0]["content"] == "count to three please"
    assert API_KEY not in json.dumps(detail)
    assert (await get(proxy, "/_proxy/exchanges/nope"))[0] == 404
    status, sessions, _ = await get(proxy, "/_proxy/sessions")
    assert sessions[0]["session"] == "suite-1" and sessions[0]["requests"] == 4
    if database.kind == "sqlite":
        cli = run_cli("usage", "--by", "model", "--format", "json", "--db", database.url)
        assert json.loads(cli) == usage
        csv_out = run_cli("usage", "--format", "csv", "--db", database.url).splitlines()
        assert csv_out[0].startswith("requests,errors") and csv_out[1].startswith("4,1,")
        logs = run_cli("logs", "--db", database.url, "--errors")
        assert "fake-error-429" in logs and "fake-model" not in logs
        shown = json.loads(run_cli("show", "--session", "suite-1", "--db", database.url))
        assert [d["id"] for d in shown] == [
            r["id"] for r in reversed((await get(proxy, "/_proxy/exchanges"))[1]["data"])
        ]
        table = run_cli("usage", "--by", "model,day", "--db", database.url)
        assert table.splitlines()[0].split()[:3] == ["model", "day", "requests"]


def run_cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_metrics_after_traffic(proxy: Proxy) -> None:
    await traffic(proxy)
    status, _, text = await get(proxy, "/_proxy/metrics")
    assert status == 200
    assert 'proxy_requests_total{model="fake-model",status="200",upstream="default"} 1.0' in text
    assert 'proxy_tokens_total{kind="reasoning",model="fake-reasoning",upstream="default"} 3.0' in text
    assert 'proxy_cost_usd_total{model="fake-openrouter",upstream="default"}' in text
    assert "proxy_time_to_first_token_seconds_bucket" in text and "proxy_request_duration_seconds_count" in text
    assert "proxy_recorder_queue_depth 0.0" in text and "proxy_recorder_written_total 4.0" in text
    assert "proxy_recorder_batch_seconds_count" in text and "proxy_recorder_dropped_total 0.0" in text


# The CLI reaches a per-test PostgreSQL schema only through the query-layer tests, so SQLite here.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_recompute_cost_reprices_and_rebuilds_rollups(proxy: Proxy, database: Database, tmp_path: Path) -> None:
    await traffic(proxy)
    config = tmp_path / "prices.toml"
    config.write_text('[pricing."fake-model"]\ninput = 1000.0\noutput = 2000.0\n')
    out = run_cli("usage", "--recompute-cost", "--config", str(config), "--db", database.url)
    assert "1 changed" in out
    rows = {
        r["model"]: r for r in json.loads(run_cli("usage", "--by", "model", "--format", "json", "--db", database.url))
    }
    row = next(r for r in await database.rows() if r["model"] == "fake-model")
    expected = (row["prompt_tokens"] * 1000.0 + row["completion_tokens"] * 2000.0) / 1e6
    assert rows["fake-model"]["cost_usd"] == pytest.approx(expected) and rows["fake-model"]["unknown_cost"] == 0
    assert rows["fake-openrouter"]["cost_usd"] == pytest.approx(row_cost(await database.rows(), "fake-openrouter"))


def row_cost(rows: list[dict[str, Any]], model: str) -> float:
    return sum(r["cost_usd"] for r in rows if r["model"] == model)
