"""The admin API through real traffic: auth rules, JSON equal to the query layer and the CLI, and no admin route
reachable through the /v1/ forwarder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from proxy.admin.api import keyset_json
from proxy.admin.views import encode
from proxy.store import browse
from proxy.store.writes import insert_exchanges
from tests.support import API_KEY, Database, Proxy, ProxyFactory
from tests.support.reported import TOKEN_FIELDS, WHOLE_HOUR, hand_made
from tests.support.traffic import admin_get, cli_stdout, link_resend, mixed_traffic

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


async def test_browse_routes_match_the_query_layer(proxy: Proxy, database: Database) -> None:
    """Keyset pages, a session with its re-send link, the session list and the model catalogue: each route's
    JSON equals the query layer's answer, on both databases."""
    await mixed_traffic(proxy)
    resent = proxy.client("/s/suite-1-b/v1")
    await resent.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "again"}])
    await proxy.recorder.flush()
    rows = {r["session_id"]: r for r in await database.rows()}
    summary = {"requests": 1, "changed": 1, "failed": 0}
    await link_resend(database, "suite-1-b", "suite-1", [(rows["suite-1-b"]["id"], rows["suite-1"]["id"])], summary)

    async def same(path: str, expected: Any) -> Any:
        status, body, _ = await admin_get(proxy, path)
        assert status == 200, (path, body)
        assert body == json.loads(encode(expected)), path
        return body

    async with database.engine.connect() as conn:
        await same("/_proxy/models", await browse.models(conn))
        await same("/_proxy/sessions", await browse.sessions(conn))
        detail = await same("/_proxy/sessions/suite-1", await browse.session_detail(conn, "suite-1"))
        pages, cursor = [], None
        while True:
            path = "/_proxy/exchanges?limit=2" + (f"&before={cursor}" if cursor else "")
            pages.append(await same(path, keyset_json(await browse.page_exchanges(conn, limit=2, before=cursor))))
            if not (cursor := pages[-1]["older"]):
                break
        newer = pages[-1]["newer"]
        await same(
            f"/_proxy/exchanges?limit=2&after={newer}",
            keyset_json(await browse.page_exchanges(conn, limit=2, after=newer)),
        )
    assert [len(p["data"]) for p in pages] == [2, 2, 1] and not pages[-1]["has_more"]
    ordered = sorted((r["started_at"], r["id"]) for r in await database.rows())
    assert pages[-1]["data"][-1]["id"] == ordered[0][1], "paging reaches the oldest exchange"
    assert [(r["session_id"], r["summary"]) for r in detail["resends"]] == [("suite-1-b", summary)]
    assert [e["model_requested"] for e in detail["exchanges"]] == [
        "fake-model",
        "fake-openrouter",
        "fake-reasoning",
        "fake-error-429",
    ]
    status, body, _ = await admin_get(proxy, "/_proxy/sessions/nope")
    assert status == 404 and body["error"]["code"] == "session_not_found"
    status, body, _ = await admin_get(proxy, "/_proxy/exchanges?before=garbage")
    assert status == 400 and "cursor" in body["error"]["message"]


async def test_a_malformed_key_filter_is_a_clear_error(proxy: Proxy) -> None:
    for route in ("usage", "exchanges", "sessions"):
        status, body, _ = await admin_get(proxy, f"/_proxy/{route}?key={API_KEY}")
        assert status == 400 and "fingerprint" in body["error"]["message"], route
        assert API_KEY not in body["error"]["message"], "a pasted key is not echoed back"
        status, body, _ = await admin_get(proxy, f"/_proxy/{route}?key=fp_0123abcd")
        assert status == 200, route


async def test_usage_shows_null_for_a_column_no_exchange_reported(proxy: Proxy, database: Database) -> None:
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, hand_made())
    for by in ("model", "model,hour", "model,session"):
        status, rows, _ = await admin_get(proxy, f"/_proxy/usage?by={by}")
        assert status == 200, rows
        assert {r["model"]: {n: (r[n], r[f"{n}_reported"]) for n in TOKEN_FIELDS} for r in rows} == WHOLE_HOUR, by
