"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright), over real recorded
traffic: totals equal the CLI's JSON; a shared URL restores the view; paging reaches the oldest exchange;
filters (errors only, an empty result, a malformed key) behave; a session opens with its re-send and its
exchanges; an exchange reads like a conversation; model colours are stable across filters and loads and
distinct up to 20 series; tables scroll on a narrow screen; auto-refresh picks up new rows; no console
errors anywhere."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy.record.exchange import Exchange, Usage
from proxy.store.writes import insert_exchanges
from tests.support import Database, Proxy
from tests.support.traffic import TOOLS, link_resend

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (.ci/run installs it)"),
    # One backend is enough here: the page reads the API, whose JSON is checked on both in test_api.py.
    pytest.mark.parametrize("database", ["sqlite"], indirect=True),
]
TIMEOUT = 15000
COLOURS_JS = "id => Object.fromEntries(Chart.getChart(id).data.datasets.map(d => [d.label, d.backgroundColor]))"


async def record_traffic(proxy: Proxy) -> None:
    """Real calls through the proxy: plain, streamed (TTFT), tools, reasoning, and an error, in one session."""
    chat = proxy.client("/s/browser/v1").chat.completions
    messages = [{"role": "user", "content": "hello dashboard"}]
    await chat.create(model="fake-model", messages=messages)
    [c async for c in await chat.create(model="fake-openrouter", messages=messages, stream=True)]
    [c async for c in await chat.create(model="fake-tools", messages=messages, tools=TOOLS, stream=True)]  # type: ignore[arg-type]
    [c async for c in await chat.create(model="fake-reasoning", messages=messages, stream=True)]
    with pytest.raises(Exception):  # noqa: B017 - any SDK error type
        await chat.create(model="fake-error-429", messages=messages)
    await proxy.recorder.flush()


async def seed_history(database: Database, n: int, models: list[str], *, days: float = 6) -> list[Exchange]:
    """``n`` older exchanges spread over the last ``days`` days, cycling through ``models``."""
    now = datetime.now(UTC)
    batch = []
    for i in range(n):
        ex = Exchange(
            method="POST",
            path="/v1/chat/completions",
            status=200,
            started_at=now - timedelta(days=days) + timedelta(days=days * i / n),
            requested_model=models[i % len(models)],
            duration_ms=50.0 + 7 * i,
        )
        ex.usage = Usage.from_provider(prompt_tokens=10 + i, completion_tokens=5, total_tokens=15 + i)
        batch.append(ex)
    async with database.engine.begin() as conn:
        await insert_exchanges(conn, batch)
    return batch


@asynccontextmanager
async def browser_page(errors: list[str], **context: Any) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            ctx = await browser.new_context(**context)
            page = await ctx.new_page()
            watch(page, errors)
            yield page
        finally:
            await browser.close()


def watch(page: Any, errors: list[str]) -> None:
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(TIMEOUT)


async def settle(page: Any, action: Any = None) -> None:
    """Run ``action`` (a click, a navigation) and wait until the page has rendered the view it leads to."""
    before = int(await page.evaluate("Number(document.body.dataset.rendered || 0)"))
    if action is not None:
        await action
    await page.wait_for_function(f"Number(document.body.dataset.rendered || 0) > {before}")
    await page.wait_for_function("document.body.dataset.busy !== '1'")


async def goto(page: Any, url: str) -> None:
    await page.goto(url)
    await page.wait_for_selector("body[data-loaded='1']")
    await page.wait_for_function("document.body.dataset.busy !== '1'")


async def test_overview_charts_colours_and_empty_state(proxy: Proxy, database: Database) -> None:
    await record_traffic(proxy)
    await seed_history(database, 30, ["hist-a", "hist-b", "hist-c"])
    cli = subprocess.run(
        [sys.executable, "-m", "proxy", "usage", "--since", "7d", "--format", "json", "--db", database.url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    totals = json.loads(cli.stdout)[0]
    base = proxy.url + "/_proxy/dashboard"
    errors: list[str] = []
    async with browser_page(errors) as page:
        await goto(page, base)
        assert await page.get_attribute("#total-requests", "data-value") == str(totals["requests"])
        assert await page.get_attribute("#total-tokens", "data-value") == str(totals["total_tokens"])
        assert float(await page.get_attribute("#total-cost", "data-value") or "nan") == pytest.approx(
            totals["cost_usd"]
        )
        assert await page.locator("#models tbody tr").count() == 8
        first = await page.evaluate(COLOURS_JS, "chart-tokens")
        assert len(set(first.values())) == len(first) == 7, "no two series share a colour"
        assert "fake-error-429" not in first  # no tokens: no series
        latency = await page.evaluate("Chart.getChart('chart-latency').data.datasets.map(d => d.label)")
        assert latency == ["p50", "p95"]
        ttft = await page.evaluate("Chart.getChart('chart-ttft').data.datasets[0].data.filter(v => v != null)")
        assert ttft, "the streamed calls of today have a TTFT"
        # A filter keeps each model's colour, and the model list.
        await settle(page, page.select_option("#f-model", "fake-tools"))
        assert "model=fake-tools" in page.url
        assert await page.evaluate(COLOURS_JS, "chart-tokens") == {"fake-tools": first["fake-tools"]}
        options = await page.locator("#f-model option").count()
        # A filter with no results: an explicit empty state, the model list unchanged.
        await page.fill("#f-session", "no-such-session")
        await settle(page, page.click("#filters button[type=submit]"))
        assert await page.is_visible("#empty") and not await page.is_visible("#charts")
        assert "No exchanges match" in await page.inner_text("#empty")
        assert await page.locator("#f-model option").count() == options
        assert await page.inner_text("#recent tbody") == "No exchanges match these filters."
        # A reload restores the view.
        await page.reload()
        await page.wait_for_selector("body[data-loaded='1']")
        assert await page.input_value("#f-session") == "no-such-session"
        assert await page.input_value("#f-model") == "fake-tools"
        assert await page.is_visible("#empty")
        # A second load of the plain view: the same colours.
        await goto(page, base)
        assert await page.evaluate(COLOURS_JS, "chart-tokens") == first
        # Hour labels: "HH:00", with the day under the first hour and under midnight.
        await settle(page, page.select_option("#f-since", "24h"))
        labels = await page.evaluate("Chart.getChart('chart-tokens').data.labels")
        assert len(labels) in (25, 26) and isinstance(labels[0], list) and re.fullmatch(r"\d\d:00", labels[0][0])
        assert all(isinstance(x, list) or re.fullmatch(r"\d\d:00", x) for x in labels)
        # A narrow screen: the page does not scroll sideways, the tables do.
        await page.set_viewport_size({"width": 380, "height": 800})
        await page.wait_for_timeout(200)
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        scroller = "document.querySelector('#recent').parentElement"
        assert await page.evaluate(f"{scroller}.scrollWidth > {scroller}.clientWidth")
    assert errors == []


async def page_ids(page: Any) -> list[str]:
    return await page.eval_on_selector_all("#recent tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")


async def check_paging(page: Any, base: str, newest_first: list[str]) -> None:
    """Paging reaches the oldest exchange, each exactly once; "Newer" and "Newest" lead back; a reload stays."""
    await goto(page, base)
    pages = [await page_ids(page)]
    while await page.get_attribute("#page-older", "href"):
        await settle(page, page.click("#page-older"))
        pages.append(await page_ids(page))
    assert [len(p) for p in pages] == [50, 50, 25]
    assert [i for p in pages for i in p] == newest_first and pages[-1][-1] == newest_first[-1]
    assert "(the oldest)" in await page.inner_text("#page-info")
    await settle(page, page.click("#page-newer"))
    assert await page_ids(page) == pages[1]
    await settle(page, page.click("#page-newest"))
    assert await page_ids(page) == pages[0] and await page.get_attribute("#page-newer", "href") is None
    # A page is in the URL too: a reload stays on it.
    await settle(page, page.click("#page-older"))
    await page.reload()
    await page.wait_for_selector("body[data-loaded='1']")
    assert await page_ids(page) == pages[1]


async def test_shared_url_paging_filters_and_auto_refresh(proxy: Proxy, database: Database) -> None:
    await record_traffic(proxy)
    await seed_history(database, 120, ["hist-a", "hist-b"])
    rows = await database.rows()
    newest_first = [r["id"] for r in sorted(rows, key=lambda r: (r["started_at"], r["id"]), reverse=True)]
    failed = next(r["id"] for r in rows if r["status"] == 429)
    base = proxy.url + "/_proxy/dashboard"
    errors: list[str] = []
    async with browser_page(errors) as page:
        await check_paging(page, base, newest_first)

        # A malformed key filter: a clear error, and the value never reaches the URL.
        await page.fill("#f-key", "sk-test-SECRET-0123456789")
        await page.click("#filters button[type=submit]")
        assert "fingerprint" in await page.inner_text("#error") and "SECRET" not in page.url
        # The server says the same for a URL made by hand.
        await goto(page, base + "?key=fp_NOT-HEX")
        assert "fingerprint" in await page.inner_text("#error")
        assert await page.get_attribute("#f-key", "aria-invalid") == "true"
        assert await page.inner_text("#total-requests") == "\N{EN DASH}", "unknown, not 0"

    # A shared URL restores the view in a fresh browser: period, errors filter, the open exchange.
    async with browser_page(errors) as page:
        await goto(page, base + f"?since=30d&errors=1&exchange={failed}")
        assert await page.input_value("#f-since") == "30d" and await page.is_checked("#f-errors")
        assert await page_ids(page) == [failed]
        assert await page.is_visible("#drawer") and await page.inner_text("#detail-id") == failed
        assert "429" in await page.inner_text("#detail-response")
        # Changing a filter closes the panel; Back brings the previous view back, panel included.
        await settle(page, page.uncheck("#f-errors"))
        assert not await page.is_visible("#drawer") and "exchange=" not in page.url
        assert len(await page_ids(page)) == 50
        await settle(page, page.go_back())
        assert await page.is_visible("#drawer") and await page_ids(page) == [failed]

        # Auto-refresh (any period a URL gives) picks up a new exchange without a reload.
        await goto(page, base + "?refresh=1")
        before = int(await page.get_attribute("#total-requests", "data-value") or 0)
        await seed_history(database, 1, ["late-model"], days=0.01)
        await page.wait_for_function(
            f"document.querySelector('#total-requests').dataset.value === '{before + 1}'", timeout=10000
        )
        assert "late-model" in await page.inner_text("#models")
    assert [e for e in errors if "400" not in e] == []  # the malformed key's 400s are expected


async def test_sessions_resends_and_the_exchange_view(proxy: Proxy, database: Database) -> None:
    await record_traffic(proxy)
    again = proxy.client("/s/browser-b/v1").chat.completions
    await again.create(model="fake-model", messages=[{"role": "user", "content": "hello dashboard"}])
    await proxy.recorder.flush()
    rows = await database.rows()
    by_model = {r["model_requested"]: r for r in rows if r["session_id"] == "browser"}
    copy = next(r for r in rows if r["session_id"] == "browser-b")
    summary = {"requests": 1, "answered": 1, "failed": 0, "changed": 1, "content_changed": 1, "tool_calls_changed": 0}
    await link_resend(database, "browser-b", "browser", [(copy["id"], by_model["fake-model"]["id"])], summary)
    base = proxy.url + "/_proxy/dashboard"
    errors: list[str] = []
    async with browser_page(errors) as page:
        await goto(page, base)
        await settle(page, page.click("#tab-sessions"))
        listed = await page.eval_on_selector_all("#sessions-table tbody tr", "rs => rs.map(r => r.dataset.session)")
        assert listed == ["browser-b", "browser"]
        assert "re-send of browser" in await page.inner_text("#sessions-table tbody tr:first-child")
        # A session opens: its exchanges in recorded order, its re-send with the report's summary.
        await settle(page, page.click("#sessions-table a:text-is('browser')"))
        assert "open=browser" in page.url
        order = await page.eval_on_selector_all("#session-exchanges tbody tr", "rs => rs.map(r => r.dataset.id)")
        assert order == [r["id"] for r in sorted(by_model.values(), key=lambda r: (r["started_at"], r["id"]))]
        resends = await page.inner_text("[data-testid=resends]")
        assert "browser-b" in resends and "1 changed" in resends and "0 failed" in resends
        # The re-sent session points back at its source, and each exchange at the one it repeats.
        await settle(page, page.click("[data-testid=resends] a:text-is('browser-b')"))
        assert "Re-send of browser" in await page.inner_text("[data-testid=resent-from]")
        await settle(page, page.click("#session-exchanges a:text-is('original')"))
        assert await page.inner_text("#detail-id") == by_model["fake-model"]["id"]
        assert "Echo: hello dashboard" in await page.inner_text("#detail-response")
        await settle(page, page.keyboard.press("Escape"))
        assert not await page.is_visible("#drawer")

        # An exchange reads like a conversation: messages, tool calls, reasoning, timing, usage, raw JSON.
        await goto(page, base + "?view=sessions&open=browser")
        await settle(page, page.click(f"#session-exchanges tr[data-id='{by_model['fake-tools']['id']}']"))
        assert "hello dashboard" in await page.inner_text("#detail-messages")
        call = await page.inner_text("#detail-response .toolcall")
        assert "get_weather" in call and '"city": "Paris"' in call
        assert "time to first token" in await page.inner_text("[data-testid=timing]")
        await goto(page, base + f"?exchange={by_model['fake-reasoning']['id']}")
        assert "reasoning" in (await page.inner_text("#detail-response")).lower()
        usage = await page.inner_text("#drawer table.usage")
        assert "cached" in usage and "reasoning" in usage
        await goto(page, base + f"?exchange={by_model['fake-openrouter']['id']}")
        assert "$0.000008" in await page.inner_text("#drawer table.usage")
        await page.click("#raw-toggle")
        await page.wait_for_selector("#raw-box:not([hidden])")
        raw = json.loads(await page.inner_text("#raw-json"))
        assert raw["id"] == by_model["fake-openrouter"]["id"] and raw["stream_chunks"]
    assert errors == []


async def test_twenty_series_at_most_with_stable_distinct_colours(proxy: Proxy, database: Database) -> None:
    models = [f"model-{i:02d}" for i in range(25)]
    await seed_history(database, 75, models)
    base = proxy.url + "/_proxy/dashboard"
    errors: list[str] = []
    async with browser_page(errors) as page:
        await goto(page, base)
        colours = await page.evaluate(COLOURS_JS, "chart-tokens")
        assert len(colours) == 20 and "other" in colours
        assert len(set(colours.values())) == 20, "no two series share a colour"
        # The 19 biggest have their own series (model-06..24); of those, the first 20 models ever seen have fixed
        # colours (model-00..19): these keep theirs when shown alone.
        assert "model-05" not in colours and "model-06" in colours
        for name in ("model-07", "model-19"):
            await settle(page, page.select_option("#f-model", name))
            assert await page.evaluate(COLOURS_JS, "chart-tokens") == {name: colours[name]}
        await goto(page, base)
        assert await page.evaluate(COLOURS_JS, "chart-tokens") == colours
        swatches = await page.eval_on_selector_all(
            "#models td[data-model] .swatch", "s => s.map(e => getComputedStyle(e).backgroundColor)"
        )
        assert len(swatches) == 25
    assert errors == []


def costs_as_strings(value: Any) -> Any:
    """Every ``cost_usd``/``usd`` number as an exact decimal string, the other form the API may send."""
    if isinstance(value, list):
        return [costs_as_strings(v) for v in value]
    if isinstance(value, dict):
        return {
            k: f"{v:.10f}" if k in ("cost_usd", "usd") and isinstance(v, float) else costs_as_strings(v)
            for k, v in value.items()
        }
    return value


async def test_costs_as_decimal_strings_read_the_same(proxy: Proxy, database: Database) -> None:
    await record_traffic(proxy)
    base = proxy.url + "/_proxy/dashboard"
    openrouter = next(r["id"] for r in await database.rows() if r["model_requested"] == "fake-openrouter")
    errors: list[str] = []
    shown: list[dict[str, Any]] = []
    async with browser_page(errors) as page:
        for rewrite in (False, True):
            if rewrite:

                async def as_strings(route: Any) -> None:
                    response = await route.fetch()
                    body = costs_as_strings(json.loads(await response.body()))
                    await route.fulfill(response=response, body=json.dumps(body))

                await page.route(re.compile(r"/_proxy/(usage|exchanges|sessions)"), as_strings)
            await goto(page, base + f"?exchange={openrouter}")
            shown.append(
                {
                    "total": await page.inner_text("#total-cost"),
                    "models": await page.inner_text("#models"),
                    "recent": await page.inner_text("#recent"),
                    "panel": await page.inner_text("#drawer table.usage"),
                    "chart": await page.evaluate("Chart.getChart('chart-cost').data.datasets[0].data"),
                }
            )
        formats = await page.evaluate(
            """async () => {
                const { fmtCost } = await import('/_proxy/static/format.js');
                return [5.1e-6, "0.0000051000", 2e-8, "0.0000000200", 0, "0", 0.0123, 1234.5, "1234.5", null, "x"]
                    .map(fmtCost);
            }"""
        )
    assert shown[0] == shown[1] and shown[0]["total"] == "$0.000008"
    assert formats == [
        "$0.0000051", "$0.0000051", "$0.00000002", "$0.00000002", "$0", "$0", "$0.0123", "$1,234.50", "$1,234.50",
        "\N{EN DASH}", "\N{EN DASH}",
    ]  # fmt: skip
    assert errors == []


async def test_the_admin_token_from_the_box_or_the_fragment(start_proxy: Any) -> None:
    proxy = await start_proxy(admin_token="dash-token-123")
    await record_traffic(proxy)
    base = proxy.url + "/_proxy/dashboard"
    errors: list[str] = []
    async with browser_page(errors) as page:
        await goto(page, base)
        assert await page.is_visible("#token-box") and "admin token" in await page.inner_text("#error")
        await page.fill("#token-input", "dash-token-123")
        await settle(page, page.click("#token-save"))
        assert await page.get_attribute("#total-requests", "data-value") == "5"
        assert not await page.is_visible("#error")
    async with browser_page(errors) as page:
        await goto(page, base + "?since=24h#token=dash-token-123")
        assert await page.get_attribute("#total-requests", "data-value") == "5"
        assert page.url.endswith("?since=24h"), "the token leaves the address bar"
    assert [e for e in errors if "401" not in e] == []
