"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright): it loads without
console errors, its totals equal the CLI's JSON, and clicking a recent exchange opens it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import Proxy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium not installed (.ci/run installs it)"
)


# One backend is enough: the page reads the same query layer that is tested on both.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_dashboard_in_a_real_browser(proxy: Proxy, database: object) -> None:
    client = proxy.client("/s/browser/v1")
    messages = [{"role": "user", "content": "hello dashboard"}]
    await client.chat.completions.create(model="fake-model", messages=messages)
    stream = await client.chat.completions.create(model="fake-openrouter", messages=messages, stream=True)
    [c async for c in stream]
    await proxy.recorder.flush()
    cli = subprocess.run(
        [sys.executable, "-m", "proxy", "usage", "--since", "7d", "--format", "json", "--db", database.url],  # type: ignore[attr-defined]
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    totals = json.loads(cli.stdout)[0]

    errors: list[str] = []
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = await browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(proxy.url + "/_proxy/dashboard")
            await page.wait_for_selector("body[data-loaded='1']", timeout=15000)
            assert await page.get_attribute("#total-requests", "data-value") == str(totals["requests"])
            assert await page.get_attribute("#total-tokens", "data-value") == str(totals["total_tokens"])
            assert float(await page.get_attribute("#total-cost", "data-value") or "nan") == pytest.approx(
                totals["cost_usd"]
            )
            assert await page.locator("#models tbody tr").count() == 2
            assert await page.evaluate("Chart.getChart('chart-tokens').data.datasets.length") == 2
            rows = page.locator("#recent tbody tr")
            assert await rows.count() == 2
            await rows.first.click()
            await page.wait_for_selector("#detail:not([hidden])")
            assert "hello dashboard" in await page.inner_text("#detail-messages")
            assert "Echo: hello dashboard" in await page.inner_text("#detail-response")
            assert "total_tokens" in await page.inner_text("#detail-usage")
        finally:
            await browser.close()
    assert errors == []
