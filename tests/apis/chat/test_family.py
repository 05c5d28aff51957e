"""Chat and legacy completions through the proxy with the real openai SDK: what a client that did not ask for
usage sees (what it would see directly), what is recorded, and replay with the upstream stopped."""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.support import API_KEY, Proxy, ProxyFactory

MESSAGES: Any = [{"role": "user", "content": "one two three"}]
_IDS = re.compile(r"(chatcmpl|cmpl)-fake\d+-\d+")


def same_up_to_ids(chunks: list[Any]) -> str:
    return re.sub(r'"created": \d+', '"created": 0', _IDS.sub("ID", json.dumps(chunks, sort_keys=True)))


async def chat_chunks(client: openai.AsyncOpenAI, model: str, **kw: Any) -> list[dict[str, Any]]:
    stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **kw)
    return [c.model_dump() async for c in stream]


async def legacy_chunks(client: openai.AsyncOpenAI, model: str, **kw: Any) -> list[dict[str, Any]]:
    stream = await client.completions.create(model=model, prompt="one two three", stream=True, **kw)
    return [c.model_dump() async for c in stream]


def direct(upstream: TestServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(upstream.make_url("/v1")), api_key=API_KEY, max_retries=0)


@pytest.mark.parametrize("read", [chat_chunks, legacy_chunks], ids=["chat", "legacy"])
@pytest.mark.parametrize("model", ["fake-litellm", "fake-model", "fake-usage-every-chunk"])
async def test_a_client_that_did_not_ask_for_usage_sees_what_it_sees_directly(
    proxy: Proxy, upstream: TestServer, read: Any, model: str
) -> None:
    # Chunks carry "usage": null once usage is asked for (as OpenAI's do): the SDK reads None either way.
    through = await read(proxy.client(), model)
    async with direct(upstream) as plain:
        assert same_up_to_ids(through) == same_up_to_ids(await read(plain, model))
    if model != "fake-usage-every-chunk":
        assert all(c.get("usage") is None for c in through), "the usage the proxy asked for stays hidden"
    [row] = await proxy.rows()
    assert (row["outcome"], row["status"], row["prompt_tokens"], row["completion_tokens"]) == ("complete", 200, 3, 4)
    assert row["api"] == ("chat" if read is chat_chunks else "completions")


@pytest.mark.parametrize("read", [chat_chunks, legacy_chunks], ids=["chat", "legacy"])
async def test_a_client_that_asked_gets_the_empty_choice_usage_chunk(proxy: Proxy, read: Any) -> None:
    chunks = await read(proxy.client(), "fake-litellm", stream_options={"include_usage": True})
    assert chunks[-1]["usage"]["total_tokens"] == 7 and len(chunks[-1]["choices"]) == 1


async def test_legacy_completions_are_recorded_with_usage_and_replayed(start_proxy: ProxyFactory) -> None:
    recorder = await start_proxy()

    async def suite(client: openai.AsyncOpenAI) -> list[Any]:
        plain = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say something nice")
        streamed = await legacy_chunks(client, "gpt-3.5-turbo-instruct")
        asked = await legacy_chunks(client, "gpt-3.5-turbo-instruct", stream_options={"include_usage": True})
        return [plain.model_dump(exclude_unset=True), streamed, asked]

    recorded = await suite(recorder.client("/s/legacy/v1"))
    assert recorded[0]["object"] == "text_completion" and recorded[0]["choices"][0]["text"].startswith("Echo:")
    rows = await recorder.rows()
    assert [(r["api"], r["outcome"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        ("completions", "complete", 3, 4),
        ("completions", "complete", 3, 4),
        ("completions", "complete", 3, 4),
    ]
    assert rows[1]["ttft_ms"] is not None and rows[1]["finish_reason"] == "stop"
    replayer = await start_proxy(upstream_url="", mode="replay", replay={"timing": "instant"})
    assert await suite(replayer.client("/s/legacy/v1")) == recorded
