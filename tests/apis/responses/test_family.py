"""The Responses family end to end: the real openai SDK through the proxy to the fake upstream, recorded,
priced and replayed, on SQLite and PostgreSQL; and the fold of the streams the reference describes."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.record.exchange import Outcome
from tests.support import API_KEY, Proxy, ProxyFactory, ending, upstream_requests
from tests.support.folding import finished_stream
from tests.support.traffic import admin_get, cli_stdout

TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
INPUT = "what is the weather in Paris today"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
_IDS = re.compile(r"resp_fake\d+_\d+")


def same_up_to_ids(value: Any) -> Any:
    """Two calls differ in their response ids and creation times only."""
    text = _IDS.sub("resp_X", json.dumps(value, sort_keys=True))
    return re.sub(r'"created_at": \d+', '"created_at": 0', text)


async def events(client: openai.AsyncOpenAI, **kwargs: Any) -> list[dict[str, Any]]:
    stream = await client.responses.create(stream=True, **kwargs)
    return [event.model_dump(exclude_unset=True) async for event in stream]


def direct(upstream: TestServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(upstream.make_url("/v1")), api_key=API_KEY, max_retries=0)


@pytest.mark.parametrize("model", ["fake-model", "fake-tools", "fake-reasoning"])
async def test_a_stream_is_the_same_as_direct_and_recorded_with_its_usage(
    proxy: Proxy, upstream: TestServer, model: str
) -> None:
    kwargs = {"model": model, "input": INPUT, "tools": TOOLS}
    through = await events(proxy.client(), **kwargs)
    async with direct(upstream) as plain:
        assert same_up_to_ids(through) == same_up_to_ids(await events(plain, **kwargs))
    final = through[-1]["response"]
    [row] = await proxy.rows()
    assert ending(row) == ("responses", "complete", 200, "completed")
    usage = final["usage"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
        usage["total_tokens"],
    )
    assert row["cached_tokens"] == usage["input_tokens_details"]["cached_tokens"]
    assert row["reasoning_tokens"] == usage["output_tokens_details"]["reasoning_tokens"]
    assert row["model"] == model and row["usage_source"] == "provider" and row["ttft_ms"] is not None
    [body] = (await proxy.bodies()).values()
    assert json.loads(body["assembled"]) == final, "the assembled response is the final response object"
    assert b"stream_options" not in upstream_requests(upstream)[0]["raw"], "nothing injected"


async def test_bytes_reach_the_client_untouched(proxy: Proxy, upstream: TestServer) -> None:
    request = json.dumps({"model": "fake-model", "input": INPUT, "stream": True}).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{proxy.url}/v1/responses", data=request, headers=AUTH) as resp,
    ):
        received = await resp.read()
    assert received.startswith(b"event: response.created\ndata: {")
    assert upstream_requests(upstream)[0]["raw"] == request
    [body] = (await proxy.bodies()).values()
    assert body["response_body"] == received


async def test_a_tool_call_streamed_with_the_sdk_helper(proxy: Proxy) -> None:
    client = proxy.client()
    async with client.responses.stream(model="fake-tools", input=INPUT, tools=TOOLS) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.function_call_arguments.delta"]
        final = await stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}
    assert "".join(deltas) == call.arguments
    [row] = await proxy.rows()
    assert row["outcome"] == "complete" and row["completion_tokens"] == final.usage.output_tokens  # type: ignore[union-attr]


async def test_non_streamed_call_records_prompt_and_completion_and_costs_to_the_cent(proxy: Proxy) -> None:
    words = " ".join(["word"] * 9_000)
    reply = await proxy.client().responses.create(
        model="o3-pro", input=words, instructions="be brief", extra_headers={"x-fake-events": "4000"}
    )
    assert reply.usage is not None and (reply.usage.input_tokens, reply.usage.output_tokens) == (9_002, 4_000)
    [row] = await proxy.rows()
    assert (row["api"], row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        "responses",
        9_002,
        4_000,
        13_002,
    )
    # o3-pro: $20 per million input tokens, $80 per million output tokens.
    # 9,002 x 20 / 1e6 = 0.18004; 4,000 x 80 / 1e6 = 0.32; total 0.50004 USD.
    assert row["cost_usd"] == pytest.approx(0.50004) and round(row["cost_usd"], 2) == 0.50
    assert (row["cost_source"], row["price_ref"]) == ("computed", "bundled:o3-pro")
    assert row["finish_reason"] == "completed" and row["outcome"] == "complete"


async def test_cached_and_reasoning_tokens_are_priced_at_their_rates(start_proxy: ProxyFactory) -> None:
    prices = {"fake-reasoning": {"input": 2.0, "cached_input": 0.5, "output": 8.0, "reasoning": 12.0}}
    proxy = await start_proxy(pricing=prices)
    words = " ".join(["word"] * 20_000)
    await proxy.client().responses.create(model="fake-reasoning", input=words, extra_headers={"x-fake-events": "997"})
    [row] = await proxy.rows()
    # usage: input 20,000 of which 10,000 cached; output 1,000 of which 3 reasoning.
    assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"], row["reasoning_tokens"]) == (
        20_000,
        10_000,
        1_000,
        3,
    )
    # 10,000 x 2 + 10,000 x 0.5 + 997 x 8 + 3 x 12 = 20,000 + 5,000 + 7,976 + 36 = 33,012 -> $0.033012
    assert row["cost_usd"] == pytest.approx(0.033012) and round(row["cost_usd"], 2) == 0.03


async def test_usage_by_api_reports_the_responses_tokens(proxy: Proxy) -> None:
    client = proxy.client()
    await client.responses.create(model="fake-model", input="one two three")
    await events(client, model="fake-model", input="four five")
    await client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "six"}])
    await proxy.recorder.flush()
    _, out, _ = await admin_get(proxy, "/_proxy/usage?by=api")
    if proxy.database.kind == "sqlite":  # the CLI reaches a per-test PostgreSQL schema only through the API
        assert json.loads(cli_stdout("usage", "--by", "api", "--format", "json", "--db", proxy.database.url)) == out
    by_api = {r["api"]: r for r in out}
    assert (by_api["responses"]["requests"], by_api["responses"]["errors"]) == (2, 0)
    assert (by_api["responses"]["prompt_tokens"], by_api["responses"]["completion_tokens"]) == (5, 7)
    assert by_api["chat"]["prompt_tokens"] == 1


async def test_replay_with_the_upstream_stopped_gives_the_same_answers(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()

    async def suite(client: openai.AsyncOpenAI) -> list[Any]:
        plain = await client.responses.create(model="fake-model", input=INPUT)
        streamed = await events(client, model="fake-tools", input=INPUT, tools=TOOLS)
        again = await events(client, model="fake-reasoning", input="think twice")
        return [plain.model_dump(), streamed, again]

    recorded = await suite(recorder.client("/s/resp/v1"))
    await recorder.recorder.flush()
    replayer = await start_proxy(upstream_url="", mode="replay", replay={"timing": "instant"})
    assert await suite(replayer.client("/s/resp/v1")) == recorded


async def test_replay_converts_between_stream_and_json(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()
    client = recorder.client("/s/conv/v1")
    plain = await client.responses.create(model="fake-reasoning", input="as json")
    streamed = await events(client, model="fake-tools", input="as a stream", tools=TOOLS)
    await recorder.recorder.flush()
    replayer = await start_proxy(upstream_url="", mode="replay", replay={"timing": "instant"})
    again = replayer.client("/s/conv/v1")
    raw = await again.responses.with_raw_response.create(model="fake-reasoning", input="as json", stream=True)
    assert raw.headers["X-Proxy-Replay-Converted"] == "json-to-stream"
    as_stream = [e async for e in raw.parse()]
    assert as_stream[-1].type == "response.completed" and as_stream[-1].response.model_dump() == plain.model_dump()
    text = "".join(e.delta for e in as_stream if e.type == "response.output_text.delta")
    assert text == plain.output_text
    raw_json = await again.responses.with_raw_response.create(model="fake-tools", input="as a stream", tools=TOOLS)
    assert raw_json.headers["X-Proxy-Replay-Converted"] == "stream-to-json"
    assert raw_json.parse().model_dump(exclude_unset=True) == streamed[-1]["response"]


async def test_an_unfinished_response_is_a_miss_that_says_why_when_it_must_change_form(
    start_proxy: ProxyFactory, upstream: TestServer
) -> None:
    recorder = await start_proxy()
    client = recorder.client("/s/bg/v1")
    queued = await client.responses.create(model="fake-model", input="later please", background=True)
    assert queued.status == "queued"
    with pytest.raises(openai.APIError):  # a stream cut short: its response never finished
        await events(client, model="fake-cut", input="cut me short")
    await recorder.recorder.flush()
    partial = {"timing": "instant", "include_partial": True, "on_exhausted": "repeat-last"}
    again = (await start_proxy(upstream_url="", mode="replay", replay=partial)).client("/s/bg/v1")
    as_recorded = await again.responses.with_raw_response.create(
        model="fake-model", input="later please", background=True
    )
    assert as_recorded.headers["X-Proxy-Replay"] == "hit" and as_recorded.parse().model_dump() == queued.model_dump()

    cases = [
        ({"model": "fake-model", "input": "later please", "background": True, "stream": True}, "a stream", "queued"),
        ({"model": "fake-cut", "input": "cut me short"}, "a non-streamed (JSON) response", "in_progress"),
    ]
    for kwargs, wanted, status in cases:
        with pytest.raises(openai.NotFoundError) as caught:
            await again.responses.create(**kwargs)
        error, headers = caught.value, caught.value.response.headers
        assert headers["X-Proxy-Replay"] == "miss" and "X-Proxy-Exchange-Id" not in headers
        assert isinstance(error.body, dict) and error.body["type"] == error.body["code"] == "replay_miss"
        assert f"this request asks for {wanted} and the recorded response's status is {status!r}" in error.message
        assert "it had not finished" in error.message and error.body["recording"]

    # In auto mode such a miss is forwarded and recorded, like any other.
    auto = await start_proxy(mode="auto")
    raw = await auto.client("/s/bg/v1").responses.with_raw_response.create(
        model="fake-model", input="later please", background=True, stream=True
    )
    assert raw.headers["X-Proxy-Replay"] == "recorded"
    assert [e.type async for e in raw.parse()][-1] == "response.completed"
    assert len(upstream_requests(upstream)) == 3


async def test_a_client_leaving_mid_stream_is_499_with_the_usage_seen_so_far(proxy: Proxy) -> None:
    stream = await proxy.client().responses.create(
        model="fake-usage-every-event",
        input="a long answer please",
        stream=True,
        extra_headers={"x-fake-delay-ms": "80"},
    )
    deltas = 0
    async for event in stream:
        deltas += event.type == "response.output_text.delta"
        if deltas == 2:  # after the snapshot that counted the first one
            break
    await stream.close()
    [row] = await proxy.wait_rows(1)
    assert (row["outcome"], row["status"], row["upstream_status"]) == ("client_disconnected", 499, 200)
    assert row["prompt_tokens"] == 4 and row["completion_tokens"] is not None and row["completion_tokens"] >= 1
    assert row["ttft_ms"] is not None


async def test_a_client_leaving_before_the_usage_came_records_none(proxy: Proxy) -> None:
    stream = await proxy.client().responses.create(
        model="fake-model", input="a long answer please", stream=True, extra_headers={"x-fake-delay-ms": "80"}
    )
    async for event in stream:
        if event.type == "response.output_text.delta":
            break
    await stream.close()
    [row] = await proxy.wait_rows(1)
    assert (row["outcome"], row["status"]) == ("client_disconnected", 499)
    assert row["prompt_tokens"] is None and row["usage_source"] == "missing", "unknown, not 0"


async def test_sync_sdk_closing_right_after_completed_is_complete(proxy: Proxy) -> None:
    def consume() -> str:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key=API_KEY, max_retries=0) as client:
            stream = client.responses.create(
                model="fake-model", input=INPUT, stream=True, extra_headers={"x-fake-eof-delay-ms": "20"}
            )
            return "".join(e.delta for e in stream if e.type == "response.output_text.delta")

    texts = [await asyncio.to_thread(consume) for _ in range(3)]
    assert all(t == texts[0] and t for t in texts)
    rows = await proxy.wait_rows(3)
    assert {(r["outcome"], r["status"]) for r in rows} == {("complete", 200)}, rows


@pytest.mark.parametrize(
    ("model", "outcome", "finish", "error"),
    [
        ("fake-incomplete", "complete", "max_output_tokens", None),
        ("fake-failed", "upstream_error_event", "failed", "The model failed to finish the response."),
        ("fake-error-midstream", "upstream_error_event", None, "provider overloaded mid-generation"),
    ],
)
async def test_each_terminal_event_has_its_outcome(
    proxy: Proxy, model: str, outcome: str, finish: str | None, error: str | None
) -> None:
    await events(proxy.client(), model=model, input=INPUT)
    [row] = await proxy.rows()
    assert (row["outcome"], row["finish_reason"], row["error"], row["status"]) == (outcome, finish, error, 200)


async def test_a_cut_stream_is_cut_and_keeps_what_was_generated(proxy: Proxy) -> None:
    with pytest.raises(openai.APIError):
        await events(proxy.client(), model="fake-cut", input=INPUT)
    [row] = await proxy.rows()
    assert row["outcome"] == "upstream_cut" and row["prompt_tokens"] is None
    [body] = (await proxy.bodies()).values()
    assert json.loads(body["assembled"])["output"][0]["content"][0]["text"] == "Echo: "


def test_a_complete_stream_ending_without_a_terminal_event_is_cut_naming_the_markers() -> None:
    body = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"a"}\n\n'
    ex = finished_stream("/v1/responses", body)
    assert ex.outcome is Outcome.UPSTREAM_CUT and ex.ttft_ms == 3.0
    assert ex.error == (
        "stream ended without response.completed, response.incomplete, response.failed or an error event"
    )
