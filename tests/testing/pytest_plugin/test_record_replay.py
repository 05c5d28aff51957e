"""The pytest plugin records once and replays offline, as recorded: every test of a generated suite (chat,
streams, tools, the async client, Messages with the Anthropic SDK), its misses explained, no key in a cassette,
and streams replayed instantly or at the recorded pace."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import API_KEY
from tests.support.plugin_runs import HEADER, LiveUpstream, Tripwire, cassette, kept, module, pytest_in, record

pytest_plugins = ["pytester"]


SUITE = (
    HEADER
    + """
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
WEATHER = {"city": "Paris", "unit": "celsius"}


def test_plain(llm_proxy):
    reply = ask(openai.OpenAI(), PROMPT)
    keep("plain", reply.model_dump())
    assert reply.choices[0].message.content == f"Echo: {PROMPT} "


def test_stream(llm_proxy):
    chunks = list(ask(openai.OpenAI(), PROMPT, stream=True))
    keep("stream", [c.model_dump() for c in chunks])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"Echo: {PROMPT} "


def test_tool_call(llm_proxy):
    client = openai.OpenAI()
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    reply = client.chat.completions.create(model="fake-tools", messages=messages, tools=TOOLS)
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == WEATHER
    chunks = list(client.chat.completions.create(model="fake-tools", messages=messages, tools=TOOLS, stream=True))
    deltas = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert json.loads("".join(t.function.arguments or "" for t in deltas)) == WEATHER
    keep("tool_call", [reply.model_dump(), [c.model_dump() for c in chunks]])


def test_asked_twice(llm_proxy):
    client = openai.OpenAI()
    first, second = ask(client, PROMPT), ask(client, PROMPT)
    keep("twice", [first.id, second.id])
    assert first.id != second.id, "the second identical request gets the second recording"


def test_left_early(llm_proxy):
    stream = ask(openai.OpenAI(), "a long answer", stream=True, extra_headers={"x-fake-delay-ms": "100"})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break  # the rest of the stream is never read: the recording is partial
    stream.close()
    keep("left_early", chunk.model_dump())
    assert chunk.choices[0].delta.content == "Echo: "


@pytest.mark.asyncio
async def test_async(llm_proxy):
    client = openai.AsyncOpenAI()
    reply = await ask(client, PROMPT)
    stream = await ask(client, PROMPT, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    keep("async", [reply.model_dump(), text])
    assert text == reply.choices[0].message.content == f"Echo: {PROMPT} "


def test_zz_environment_restored():
    assert "OPENAI_BASE_URL" not in os.environ and "ANTHROPIC_BASE_URL" not in os.environ
"""
)

NAMES = ["plain", "stream", "tool_call", "twice", "left_early", "async"]


def test_record_once_then_replay_offline(
    pytester: pytest.Pytester,
    live_upstream: LiveUpstream,
    tripwire: Tripwire,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_llm=module(SUITE, prompt="Say hello"))
    record(pytester, live_upstream, passed=7)
    assert sorted(p.name for p in (pytester.path / "cassettes" / "test_llm").iterdir()) == [
        f"test_{n}.jsonl" for n in ("asked_twice", "async", "left_early", "plain", "stream", "tool_call")
    ], "one cassette per test, next to the test file"
    assert [len(cassette(pytester, f"test_llm/test_{n}")) for n in ("plain", "stream", "tool_call", "asked_twice")] == [
        1,
        1,
        2,
        2,
    ]
    streamed = cassette(pytester, "test_llm/test_stream")[0]
    assert streamed.response.body.reads and len(streamed.response.body.reads) > 3, "a stream is kept as its reads"
    (left,) = cassette(pytester, "test_llm/test_left_early")
    assert left.outcome == "client_disconnected", "kept, and replayed, as what happened"
    recorded = {name: kept(out, name) for name in NAMES}
    live_upstream.stop()
    monkeypatch.delenv("OPENAI_API_KEY")  # CI has no key: the plugin gives the SDK a placeholder

    pytest_in(pytester, f"--llm-upstream={tripwire.url}").assert_outcomes(passed=7)
    assert {name: kept(out, name) for name in NAMES} == recorded, "replayed exactly as recorded"
    pytest_in(pytester, "--llm-record-mode=once", f"--llm-upstream={tripwire.url}").assert_outcomes(passed=7)
    assert tripwire.connections == 0, "replay never contacts an upstream"


MISSES = (
    HEADER
    + """


def test_greeting(llm_proxy):
    assert ask(openai.OpenAI(), PROMPT).choices[0].message.content


def test_error_swallowed(llm_proxy):
    try:
        ask(openai.OpenAI(), PROMPT)
    except openai.NotFoundError:
        pass  # code under test that hides the failure: the test fails all the same
"""
)


def test_a_changed_prompt_fails_with_the_explained_miss(
    pytester: pytest.Pytester, live_upstream: LiveUpstream, tripwire: Tripwire, out: Path
) -> None:
    pytester.makepyfile(test_miss=module(MISSES, prompt="What is the capital of France?"))
    record(pytester, live_upstream, passed=2)
    pytester.makepyfile(test_miss=module(MISSES, prompt="What is the capital of Spain?"))
    result = pytest_in(pytester, f"--llm-upstream={tripwire.url}")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*llm_proxy: 1 request(s) had no recording (record mode none; cassette *test_miss/test_greeting.jsonl "
            "holds 1 recording(s); this test's session 'test_miss::test_greeting')",
            "POST /v1/chat/completions: replay miss: no recording in session 'test_miss::test_greeting' matches*",
            "  closest (1): * in session 'test_miss::test_greeting'",
            '      /messages/0/content: "What is the capital of Spain?" (recorded "What is the capital of France?")',
            "To record what is missing: --llm-record-mode=new --llm-upstream URL*",
        ]
    )
    result.stdout.fnmatch_lines(["*_ test_error_swallowed _*", "llm_proxy: 1 request(s) had no recording*"])
    assert tripwire.connections == 0


ANTHROPIC = (
    HEADER
    + """
import urllib.request

import anthropic

ASK = {
    "model": "claude-haiku-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Bonjour Paris"}],
    "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
}


def test_messages_with_the_sdk(llm_proxy):
    assert os.environ["ANTHROPIC_BASE_URL"] == llm_proxy.anthropic_base_url
    client = anthropic.Anthropic(max_retries=0)  # its base URL and key from the environment
    keep("messages", client.messages.create(**ASK).model_dump(mode="json"))
    keep("messages", [e.model_dump(mode="json") for e in client.messages.create(stream=True, **ASK)])
    with client.messages.stream(**ASK) as stream:
        keep("messages", stream.get_final_message().model_dump(mode="json"))


def test_messages_with_x_api_key(llm_proxy):
    body = {"model": "claude-x", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"x-api-key": os.environ["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"}
    request = urllib.request.Request(
        os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", json.dumps(body).encode(), headers, method="POST"
    )
    with urllib.request.urlopen(request) as response:
        keep("raw", response.read().decode())
"""
)


def test_anthropic_base_url_is_recorded_and_replayed(
    pytester: pytest.Pytester, live_upstream: LiveUpstream, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Anthropic SDK (POST {ANTHROPIC_BASE_URL}/v1/messages) goes through the proxy, and replays offline."""
    key = "sk-ant-test-SECRET-abcdefghijklmnop"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    pytester.makepyfile(test_anthropic=ANTHROPIC)
    record(pytester, live_upstream, f"--llm-anthropic-upstream={live_upstream.url}", passed=2)
    sent = [{k.lower(): v for k, v in r["headers"].items()} for r in live_upstream.requests]
    # The SDK (2.x) sends its key as a Bearer token, curl and older SDKs as x-api-key: the client's own key.
    assert [h.get("x-api-key") or h["authorization"].removeprefix("Bearer ") for h in sent] == [key] * 4
    recorded = kept(out, "messages")
    assert [b["type"] for b in recorded[0]["content"]] == ["text", "tool_use"]
    assert recorded[1][0]["type"] == "message_start" and recorded[1][-1]["type"] == "message_stop"
    assert recorded[2]["content"][1]["input"] == recorded[0]["content"][1]["input"]
    (raw,) = kept(out, "raw")
    assert "event: ping" in raw and "event: message_stop" in raw
    exchanges = cassette(pytester, "test_anthropic/test_messages_with_the_sdk")
    assert {(e.upstream, e.path) for e in exchanges} == {("anthropic", "/v1/messages")}
    text = b"".join(p.read_bytes() for p in (pytester.path / "cassettes").rglob("*.jsonl"))
    assert b"SECRET" not in text

    live_upstream.stop()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    pytest_in(pytester).assert_outcomes(passed=2)
    assert kept(out, "messages") == recorded and kept(out, "raw") == [raw]


def test_cassettes_hold_no_key(pytester: pytest.Pytester, live_upstream: LiveUpstream, out: Path) -> None:
    pytester.makepyfile(test_llm=module(SUITE, prompt="Say hello"))
    record(pytester, live_upstream, passed=7)
    assert all(r["headers"].get("Authorization") == f"Bearer {API_KEY}" for r in live_upstream.requests)
    text = b"".join(p.read_bytes() for p in (pytester.path / "cassettes").rglob("*.jsonl"))
    assert text.count(b'"id"') >= 5
    for needle in (API_KEY, API_KEY[8:24], "Bearer", "authorization", "key_fingerprint"):
        assert needle.encode() not in text, needle
    assert not re.search(rb"fp_[0-9a-f]{24}", text), "not even the key's fingerprint"


TIMED = (
    HEADER
    + """
import aiohttp


@pytest.mark.asyncio
async def test_raw_stream(llm_proxy):
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "one two three"}]}
    headers = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "x-fake-delay-ms": "250"}
    reads = []
    async with aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        async with session.post(llm_proxy.base_url + "/chat/completions", json=body, headers=headers) as resp:
            async for data in resp.content.iter_any():
                reads.append([time.perf_counter() - t0, data.decode()])
    keep("reads", reads)
"""
)


def _boundaries(reads: list[list[Any]]) -> set[int]:
    ends, total = set(), 0
    for _, text in reads:
        total += len(text)
        ends.add(total)
    return ends


def test_replayed_streams_are_faithful_and_instant_unless_asked(
    pytester: pytest.Pytester, live_upstream: LiveUpstream, out: Path
) -> None:
    pytester.makepyfile(test_timed=TIMED)
    record(pytester, live_upstream, passed=1)
    (recorded,) = kept(out, "reads")
    span = recorded[-1][0]
    assert len(recorded) >= 6 and span > 1.2, "the upstream sent its events 250 ms apart"
    live_upstream.stop()

    pytest_in(pytester, "--llm-replay-timing=original").assert_outcomes(passed=1)
    (paced,) = kept(out, "reads")
    assert "".join(t for _, t in paced) == "".join(t for _, t in recorded), "the same bytes"
    assert _boundaries(paced) <= _boundaries(recorded), "cut only where the recording was"
    assert paced[-1][0] >= 0.8 * span and paced[-1][0] - paced[0][0] >= 0.6 * span, "at the recorded pace"

    pytest_in(pytester).assert_outcomes(passed=1)
    (instant,) = kept(out, "reads")
    assert "".join(t for _, t in instant) == "".join(t for _, t in recorded)
    assert instant[-1][0] < span / 2, "instant by default"
