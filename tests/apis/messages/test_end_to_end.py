"""Messages end to end with the real ``anthropic`` SDK: through the proxy as direct, recorded exactly,
priced to the cent, replayed with the upstream stopped; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from proxy.testing import fake_upstream
from proxy.testing.fake_upstream.messages import CACHE_USAGE
from tests.support import API_KEY, Proxy, ProxyFactory, upstream_requests
from tests.support.traffic import cli_stdout

MODEL = "claude-sonnet-4-5-20250929"
SYSTEM = [{"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
TOOLS = [{"name": "get_weather", "description": "Weather by city", "input_schema": {"type": "object"}}]
ASK: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 256,
    "system": SYSTEM,
    "tools": TOOLS,
    "messages": [{"role": "user", "content": "weather in Paris please"}],
}
PROMPT_WORDS = 9  # the fake upstream counts words: 5 of system prompt, 4 of the question
HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}


def client(base: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base, api_key=API_KEY, max_retries=0)


@pytest.fixture
async def direct(upstream: TestServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    c = client(str(upstream.make_url("")).rstrip("/"))
    yield c
    await c.close()


@pytest.fixture
async def through(proxy: Proxy) -> AsyncIterator[anthropic.AsyncAnthropic]:
    c = client(proxy.url)
    yield c
    await c.close()


def same(message: Any) -> dict[str, Any]:
    """A message without its id (the fake upstream numbers its answers)."""
    return {k: v for k, v in message.model_dump().items() if k != "id"}


def without_nulls(value: Any) -> Any:
    """The SDK's models name every optional field; the wire leaves absent ones out."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def expected_cost(usage: Any) -> float:
    """claude-sonnet-4-5 list prices: $3 input, $0.30 cache read, $3.75 5-minute and $6 1-hour write, $15 output."""
    one_hour = usage.cache_creation.ephemeral_1h_input_tokens
    five_min = usage.cache_creation_input_tokens - one_hour
    dollars = (
        usage.input_tokens * 3.0
        + usage.cache_read_input_tokens * 0.30
        + five_min * 3.75
        + one_hour * 6.0
        + usage.output_tokens * 15.0
    )
    return dollars / 1e6


def assert_recorded_as_reported(row: dict[str, Any], usage: Any) -> None:
    assert row["api"] == "messages" and row["outcome"] == "complete" and row["status"] == 200
    prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, usage.output_tokens)
    assert row["total_tokens"] == prompt + usage.output_tokens
    assert row["cached_tokens"] == usage.cache_read_input_tokens == CACHE_USAGE["cache_read_input_tokens"]
    assert row["cache_write_tokens"] == usage.cache_creation_input_tokens
    assert row["cache_write_1h_tokens"] == usage.cache_creation.ephemeral_1h_input_tokens
    assert row["usage_source"] == "provider" and row["cost_source"] == "computed"
    assert row["price_ref"] == "bundled:claude-sonnet-4-5"
    assert round(row["cost_usd"], 2) == round(expected_cost(usage), 2)
    assert row["cost_usd"] == pytest.approx(expected_cost(usage), rel=1e-9)


async def test_create_is_the_same_through_the_proxy_and_recorded_as_reported(
    proxy: Proxy, direct: anthropic.AsyncAnthropic, through: anthropic.AsyncAnthropic
) -> None:
    want = await direct.messages.create(**ASK)
    got = await through.messages.create(**ASK)
    assert same(got) == same(want)
    assert [b.type for b in got.content] == ["text", "tool_use"] and got.stop_reason == "tool_use"
    assert got.content[1].input == {"city": "Paris", "unit": "celsius"}
    [row] = await proxy.rows()
    assert_recorded_as_reported(row, got.usage)
    assert row["model_requested"] == row["model"] == MODEL and row["finish_reason"] == "tool_use"
    assert not row["stream"]


async def test_a_stream_is_the_same_byte_for_byte_and_recorded_as_reported(
    proxy: Proxy, upstream: TestServer, direct: anthropic.AsyncAnthropic, through: anthropic.AsyncAnthropic
) -> None:
    want = [e.model_dump() async for e in await direct.messages.create(stream=True, **ASK)]
    got = [e.model_dump() async for e in await through.messages.create(stream=True, **ASK)]
    for events in (want, got):
        events[0]["message"].pop("id")
    assert got == want
    kinds = [e["type"] for e in got]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "ping" not in kinds  # the SDK drops pings
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        resp = await http.post(f"{proxy.url}/v1/messages", json={**ASK, "stream": True}, headers=HEADERS)
        received = await resp.read()
    assert b"event: ping\n" in received and b"input_json_delta" in received
    rows = await proxy.rows()
    stored = (await proxy.bodies())[rows[-1]["id"]]
    assert stored["response_body"] == received, "nothing hidden: the client gets the upstream's bytes"
    async with through.messages.stream(**ASK) as stream:
        message = await stream.get_final_message()
    [*_, row] = await proxy.rows()
    assert_recorded_as_reported(row, message.usage)
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["duration_ms"]
    # The record's assembly is the message a non-streamed call returns: the SDK's own accumulation agrees.
    assembled = json.loads((await proxy.bodies())[row["id"]]["assembled"])
    assert without_nulls(assembled) == without_nulls(message.model_dump())


async def test_messages_stream_with_thinking_and_a_tool(proxy: Proxy, through: anthropic.AsyncAnthropic) -> None:
    ask = {**ASK, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    async with through.messages.stream(**ask) as stream:
        text = "".join([t async for t in stream.text_stream])
        message = await stream.get_final_message()
    assert text.startswith("Echo: weather in Paris")
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].thinking == "The user wants an echo." and message.content[0].signature
    [row] = await proxy.rows()
    assert_recorded_as_reported(row, message.usage)
    assembled = json.loads((await proxy.bodies())[row["id"]]["assembled"])
    assert [b["type"] for b in assembled["content"]] == ["thinking", "text", "tool_use"]
    assert assembled["content"][0]["signature"] == message.content[0].signature
    assert assembled["content"][2]["input"] == message.content[2].input


async def test_key_and_version_reach_the_upstream_and_only_a_fingerprint_is_kept(
    proxy: Proxy, upstream: TestServer
) -> None:
    """``x-api-key``, as curl, Claude Code and Anthropic SDKs before 2.x authenticate (2.x sends a Bearer)."""
    async with anthropic.AsyncAnthropic(
        base_url=proxy.url, api_key=None, default_headers={"X-Api-Key": API_KEY}, max_retries=0
    ) as c:
        await c.messages.create(**ASK)
    [sent] = upstream_requests(upstream)
    forwarded = {k.lower(): v for k, v in sent["headers"].items()}
    assert forwarded["x-api-key"] == API_KEY and forwarded["anthropic-version"]
    assert "authorization" not in forwarded
    [row] = await proxy.rows()
    assert row["key_fingerprint"].startswith("fp_") and API_KEY not in row["key_fingerprint"]
    headers = (await proxy.bodies())[row["id"]]["request_headers"]
    assert headers["x-api-key"] == "[redacted]" and headers["anthropic-version"] == forwarded["anthropic-version"]
    stored = repr(await proxy.rows()) + repr(await proxy.bodies())
    assert API_KEY not in stored and API_KEY[8:24] not in stored
    # The same key as a Bearer token is the same fingerprint: one key, one line in `proxy usage --by key`.
    async with client(proxy.url) as c:
        await c.messages.create(**ASK)
    rows = await proxy.rows()
    assert rows[0]["key_fingerprint"] == rows[1]["key_fingerprint"]


async def test_a_client_leaving_mid_stream_is_499_with_message_start_s_input_tokens(
    proxy: Proxy, upstream: TestServer
) -> None:
    gate = asyncio.Event()
    upstream.app[fake_upstream.CONTROL].gate = gate
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{proxy.url}/v1/messages", json={**ASK, "stream": True}, headers=HEADERS)
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"event: message_start\n")
        resp.close()
    # Open the gate only once the proxy has seen the client go: otherwise the upstream's next events may
    # reach the proxy first and be passed on (and counted) before it knows, a race a loaded machine loses.
    server = proxy.server.runner.server  # type: ignore[union-attr]
    for _ in range(200):
        if not server.connections:
            break
        await asyncio.sleep(0.01)
    gate.set()
    [row] = await proxy.wait_rows(1)
    assert row["status"] == 499 and row["upstream_status"] == 200 and row["outcome"] == "client_disconnected"
    start = json.loads(first.split(b"data: ", 1)[1])["message"]["usage"]
    prompt = start["input_tokens"] + start["cache_read_input_tokens"] + start["cache_creation_input_tokens"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (prompt, 1, 2000)
    assert row["cache_write_tokens"] == 300 and row["cache_write_1h_tokens"] == 100


async def test_an_error_event_is_raised_by_the_sdk_and_recorded_as_its_outcome(
    proxy: Proxy, through: anthropic.AsyncAnthropic
) -> None:
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        async with through.messages.stream(**{**ASK, "model": "fake-error-midstream"}) as stream:
            [e async for e in stream]
    [row] = await proxy.wait_rows(1)
    assert row["outcome"] == "upstream_error_event" and row["error"] == "Overloaded" and row["status"] == 200
    assert row["prompt_tokens"] == PROMPT_WORDS + 2000 + 300


async def test_a_cut_stream_is_cut(proxy: Proxy, through: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(Exception, match="incomplete chunked read"):  # the SDK's HTTP client, unwrapped
        async with through.messages.stream(**{**ASK, "model": "fake-cut"}) as stream:
            [e async for e in stream]
    [row] = await proxy.wait_rows(1)
    assert row["outcome"] == "upstream_cut" and row["prompt_tokens"] == PROMPT_WORDS + 2000 + 300


async def test_upstream_errors_reach_the_sdk_unchanged(
    direct: anthropic.AsyncAnthropic, through: anthropic.AsyncAnthropic
) -> None:
    errors = []
    for c in (direct, through):
        with pytest.raises(anthropic.RateLimitError) as err:
            await c.messages.create(**{**ASK, "model": "fake-error-429"})
        errors.append((err.value.status_code, err.value.type, err.value.body))
    assert errors[0] == errors[1] and errors[0][1] == "rate_limit_error"


async def test_errors_the_proxy_makes_take_anthropic_s_shape(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy("http://127.0.0.1:9/v1")  # nothing listens on port 9
    async with client(proxy.url) as c:
        with pytest.raises(anthropic.InternalServerError) as err:
            await c.messages.create(**ASK)
    assert err.value.status_code == 502 and err.value.type == "api_error"
    assert err.value.body["type"] == "error" and err.value.body["error"]["code"] == "upstream_unreachable"
    assert "unreachable" in (err.value.api_message or "")
    async with client(proxy.url + "/nowhere") as c:
        with pytest.raises(anthropic.NotFoundError) as missing:
            await c.messages.create(**ASK)
    assert missing.value.type == "not_found_error" and missing.value.body["error"]["code"] == "unknown_upstream"


async def test_replay_with_the_upstream_stopped_gives_the_same(start_proxy: ProxyFactory, upstream: TestServer) -> None:
    recorder = await start_proxy()
    async with client(recorder.url + "/s/m") as c:
        made = await c.messages.create(**ASK)
        streamed = [e.model_dump() async for e in await c.messages.create(stream=True, **ASK)]
        async with c.messages.stream(**{**ASK, "messages": [{"role": "user", "content": "only streamed"}]}) as s:
            final = await s.get_final_message()
    await recorder.recorder.flush()
    await upstream.close()
    replayer = await start_proxy(upstream_url="", mode="replay", replay={"timing": "instant"})
    async with client(replayer.url + "/s/m") as c:
        assert (await c.messages.create(**ASK)).model_dump() == made.model_dump()
        assert [e.model_dump() async for e in await c.messages.create(stream=True, **ASK)] == streamed
        # A stream recorded, asked for whole: the record's assembly answers it, as the SDK assembled it.
        ask = {**ASK, "messages": [{"role": "user", "content": "only streamed"}]}
        assert (await c.messages.create(**ask)).model_dump() == final.model_dump()
        with pytest.raises(anthropic.NotFoundError) as miss:
            await c.messages.create(**{**ASK, "max_tokens": 7})
    assert miss.value.type == "not_found_error" and miss.value.body["error"]["code"] == "replay_miss"
    assert "/max_tokens: 7 (recorded 256)" in miss.value.body["error"]["message"]


async def test_a_message_recorded_whole_replays_as_the_stream_the_sdk_folds_into_it(
    start_proxy: ProxyFactory, upstream: TestServer
) -> None:
    recorder = await start_proxy()
    async with client(recorder.url + "/s/j") as c:
        made = await c.messages.create(**ASK)
    await recorder.recorder.flush()
    await upstream.close()
    replayer = await start_proxy(upstream_url="", mode="replay", replay={"timing": "instant"})
    async with client(replayer.url + "/s/j") as c, c.messages.stream(**ASK) as stream:
        final = await stream.get_final_message()
    assert final.model_dump() == made.model_dump()


# The CLI reaches a per-test PostgreSQL schema only through the query layer, so SQLite here.
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_usage_by_api_shows_messages(proxy: Proxy, through: anthropic.AsyncAnthropic) -> None:
    await through.messages.create(**ASK)
    await proxy.client().chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    await proxy.recorder.flush()
    rows = json.loads(cli_stdout("usage", "--by", "api", "--format", "json", "--db", proxy.database.url))
    by_api = {r["api"]: r for r in rows}
    assert set(by_api) == {"chat", "messages"}
    assert by_api["messages"]["requests"] == 1 and by_api["messages"]["cache_write_tokens"] == 300
