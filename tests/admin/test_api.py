"""The admin API through real traffic: auth rules, JSON equal to the query layer and the CLI, and no admin route
reachable through the /v1/ forwarder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import API_KEY, Database, Proxy, ProxyFactory
from tests.support.traffic import admin_get, cli_stdout, mixed_traffic

TOKEN = "admin-secret-token-123"


async def test_auth_rules(start_proxy: ProxyFactory) -> None:
    open_local = await start_proxy()
    assert (await admin_get(open_local, "/_proxy/usage"))[0] == 200  # loopback, no token: open
    exposed = await start_proxy(listen="0.0.0.0:8080")
    status, body, _ = await admin_get(exposed, "/_proxy/usage")
    assert status == 403 and body["error"]["code"] == "admin_disabled" and "admin_token" in body["error"]["message"]
    assert (await admin_get(exposed, "/_proxy/dashboard"))[0] == 403
    assert (await admin_get(exposed, "/_proxy/health"))[0] == 200  # health is always open
    guarded = await start_proxy(listen="0.0.0.0:8080", admin_token=TOKEN)
    for path in ("/_proxy/usage", "/_proxy/metrics", "/_proxy/exchanges", "/_proxy/sessions"):
        status, body, _ = await admin_get(guarded, path)
        assert status == 401 and body["error"]["type"] == "authentication_error", path
        assert (await admin_get(guarded, path, "wrong-token"))[0] == 401
        assert (await admin_get(guarded, path, TOKEN))[0] == 200, path
    assert (await admin_get(guarded, "/_proxy/dashboard"))[0] == 200  # the page has no data; it asks for the token


async def test_admin_routes_unreachable_through_the_forwarder(start_proxy: ProxyFactory, upstream: Any) -> None:
    proxy = await start_proxy(admin_token=TOKEN)
    for path in ("/v1/_proxy/usage", "/s/x/v1/_proxy/usage", "/_proxy/v1/usage"):
        status, body, _ = await admin_get(proxy, path, TOKEN)
        assert not (isinstance(body, list)), path  # never the usage report
    status, body, _ = await admin_get(proxy, "/_proxy/v1/usage", TOKEN)
    assert status == 404 and body["error"]["code"] == "unknown_upstream"
    # The forwarded ones reached the upstream as ordinary paths (and the token was forwarded, not consumed).
    assert (await admin_get(proxy, "/v1/_proxy/usage", TOKEN))[0] == 404


async def test_api_matches_queries_and_cli(proxy: Proxy, database: Database, tmp_path: Path) -> None:
    await mixed_traffic(proxy)
    status, usage, _ = await admin_get(proxy, "/_proxy/usage?by=model")
    assert status == 200
    by_model = {r["model"]: r for r in usage}
    assert set(by_model) == {"fake-model", "fake-openrouter", "fake-reasoning", "fake-error-429"}
    assert by_model["fake-openrouter"]["cost_usd"] > 0  # the provider's own cost, streamed
    assert by_model["fake-model"]["unknown_cost"] == 1 and by_model["fake-model"]["cost_usd"] is None
    assert by_model["fake-error-429"]["errors"] == 1 and by_model["fake-error-429"]["unknown_cost"] == 0
    assert by_model["fake-reasoning"]["cached_tokens"] > 0 and by_model["fake-reasoning"]["reasoning_tokens"] == 3
    status, totals, _ = await admin_get(proxy, "/_proxy/usage?since=1h")
    assert totals[0]["requests"] == 4
    status, body, _ = await admin_get(proxy, "/_proxy/usage?by=nope")
    assert status == 400 and "unknown grouping" in body["error"]["message"]
    status, body, _ = await admin_get(proxy, "/_proxy/usage?since=yesterday")
    assert status == 400 and "expected an ISO date" in body["error"]["message"]
    status, page, _ = await admin_get(proxy, "/_proxy/exchanges?limit=2")
    assert len(page["data"]) == 2 and page["has_more"]
    status, detail, _ = await admin_get(proxy, f"/_proxy/exchanges/{page['data'][0]['id']}")
    assert detail["request"]["body"]["messages"][0]["content"] == "count to three please"
    assert API_KEY not in json.dumps(detail)
    assert (await admin_get(proxy, "/_proxy/exchanges/nope"))[0] == 404
    status, sessions, _ = await admin_get(proxy, "/_proxy/sessions")
    assert sessions[0]["session"] == "suite-1" and sessions[0]["requests"] == 4
    if database.kind == "sqlite":
        cli = cli_stdout("usage", "--by", "model", "--format", "json", "--db", database.url)
        assert json.loads(cli) == usage
        csv_out = cli_stdout("usage", "--format", "csv", "--db", database.url).splitlines()
        assert csv_out[0].startswith("requests,errors") and csv_out[1].startswith("4,1,")
        logs = cli_stdout("logs", "--db", database.url, "--errors")
        assert "fake-error-429" in logs and "fake-model" not in logs
        shown = json.loads(cli_stdout("show", "--session", "suite-1", "--db", database.url))
        assert [d["id"] for d in shown] == [
            r["id"] for r in reversed((await admin_get(proxy, "/_proxy/exchanges"))[1]["data"])
        ]
        table = cli_stdout("usage", "--by", "model,day", "--db", database.url)
        assert table.splitlines()[0].split()[:3] == ["model", "day", "requests"]
