"""Where a request goes, and what a request that goes nowhere gets: an OpenAI-shaped 404 naming the base URL."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.support import Proxy, ProxyFactory


async def test_a_base_url_without_v1_gets_a_404_that_says_where_the_api_is(proxy: Proxy) -> None:
    client = proxy.client(prefix="")  # the usual mistake: http://127.0.0.1:8080 as the base URL
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    error = caught.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error" and error["code"] == "unknown_url"
    assert error["message"] == (
        f"no API at POST /chat/completions: this proxy serves the API under /v1; use the base URL "
        f"{proxy.url}/v1 (or {proxy.url}/s/SESSION/v1 to name a recording session)"
    )
    assert await proxy.rows() == [], "not forwarded, not recorded"


async def test_unknown_paths_of_any_method_and_bytes_are_json_404s(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(upstreams={"openrouter": {"url": "http://127.0.0.1:9/api/v1"}})
    async with aiohttp.ClientSession() as http:
        for method, path in [("GET", "/"), ("DELETE", "/models"), ("POST", "/%FF%FE/x"), ("GET", "/v1")]:
            async with http.request(method, proxy.url + path) as resp:
                assert resp.status == 404 and resp.content_type == "application/json"
                body = await resp.json()
                assert set(body["error"]) == {"message", "type", "code", "param"}
                assert f"{proxy.url}/openrouter/v1" in body["error"]["message"]
                assert resp.headers["X-Proxy-Error"] == "unknown_url"
        async with http.get(proxy.url + "/_proxy/health") as health:
            assert health.status == 200, "the admin routes still answer"
