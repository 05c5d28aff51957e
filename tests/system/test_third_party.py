"""A third-party OpenAI-compatible mock server (``llm-mock-api`` from PyPI) as a second upstream: the chat and
Responses families checked against framing and usage shapes we did not write, through the real openai SDK.

Its streams differ from our fake's: usage on a chunk with one empty-delta choice (LiteLLM's shape) sent
whether asked or not, and Responses events framed with ``data:`` lines only (no ``event:`` lines)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support import API_KEY, ProxyFactory, ending
from tests.support.cli import PY, free_port, wait_port

pytest.importorskip("llm_mock_api", reason="llm-mock-api (a test extra) is not installed")

REPLY = "Hello from the third-party mock"
MESSAGES: Any = [{"role": "user", "content": "hi"}]
_IDS = re.compile(r"\b(chatcmpl|resp|msg_msg|msg|fc|call)_[0-9a-f]{12}\b")


@pytest.fixture(scope="module")
def mock_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cwd: Path = tmp_path_factory.mktemp("llm-mock-api")  # it reads ./config.json when there is one
    command = [PY, "-m", "llm_mock_api.cli", "start", "-p", str(port), "-H", "127.0.0.1", "-f", REPLY, "-c", "6"]
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc, timeout=60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def same_up_to_ids(value: Any) -> str:
    text = _IDS.sub("ID", json.dumps(value, sort_keys=True))
    return re.sub(r'"created(_at)?": \d+', '"created": 0', text)


def direct(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0)


async def chat(client: openai.AsyncOpenAI, stream: bool, **kw: Any) -> Any:
    if not stream:
        return (await client.chat.completions.create(model="mock-model", messages=MESSAGES, **kw)).model_dump()
    chunks = await client.chat.completions.create(model="mock-model", messages=MESSAGES, stream=True, **kw)
    return [c.model_dump() async for c in chunks]


async def responses(client: openai.AsyncOpenAI, stream: bool) -> Any:
    if not stream:
        return (await client.responses.create(model="mock-model", input="hi")).model_dump(exclude_unset=True)
    events = await client.responses.create(model="mock-model", input="hi", stream=True)
    return [e.model_dump(exclude_unset=True) async for e in events]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_chat_is_the_same_as_direct_and_recorded(start_proxy: ProxyFactory, mock_url: str, stream: bool) -> None:
    proxy = await start_proxy(upstream_url=mock_url)
    asked = {"stream_options": {"include_usage": True}} if stream else {}
    through = await chat(proxy.client(), stream, **asked)
    async with direct(mock_url) as plain:
        assert same_up_to_ids(through) == same_up_to_ids(await chat(plain, stream, **asked))
    [row] = await proxy.rows()
    assert ending(row) == ("chat", "complete", 200, "stop")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (10, 5, 15)


async def test_a_chat_client_that_did_not_ask_gets_every_content_chunk(
    start_proxy: ProxyFactory, mock_url: str
) -> None:
    proxy = await start_proxy(upstream_url=mock_url)
    through = await chat(proxy.client(), True)
    async with direct(mock_url) as plain:
        alone = await chat(plain, True)
    # This server sends its usage chunk (one empty-delta choice) even unasked; the proxy asked for usage on
    # this client's behalf, so it holds that chunk back: every other chunk is the same.
    assert alone[-1]["usage"] is not None and not alone[-1]["choices"][0]["delta"]["content"]
    assert same_up_to_ids(through) == same_up_to_ids(alone[:-1])
    assert "".join(c["choices"][0]["delta"]["content"] or "" for c in through) == REPLY
    [row] = await proxy.rows()
    assert (row["outcome"], row["prompt_tokens"], row["completion_tokens"]) == ("complete", 10, 5)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_responses_are_the_same_as_direct_and_recorded(
    start_proxy: ProxyFactory, mock_url: str, stream: bool
) -> None:
    proxy = await start_proxy(upstream_url=mock_url)
    through = await responses(proxy.client(), stream)
    async with direct(mock_url) as plain:
        assert same_up_to_ids(through) == same_up_to_ids(await responses(plain, stream))
    [row] = await proxy.rows()
    assert ending(row) == ("responses", "complete", 200, "completed")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (10, 5, 15)
    if stream:
        assert row["ttft_ms"] is not None
        [body] = (await proxy.bodies()).values()
        assert json.loads(body["assembled"]) == through[-1]["response"]


async def test_replay_with_the_mock_stopped_gives_the_same_answers(start_proxy: ProxyFactory, mock_url: str) -> None:
    recorder = await start_proxy(upstream_url=mock_url)

    async def suite(client: openai.AsyncOpenAI) -> list[Any]:
        asked = {"stream_options": {"include_usage": True}}
        return [
            await chat(client, False),
            await chat(client, True, **asked),
            *[await responses(client, s) for s in (False, True)],
        ]

    recorded = await suite(recorder.client("/s/third/v1"))
    await recorder.recorder.flush()
    replayer = await start_proxy(upstream_url="", mode="replay", replay={"timing": "instant"})
    assert await suite(replayer.client("/s/third/v1")) == recorded
