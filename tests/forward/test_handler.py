"""Through the real openai SDK: the same results through the proxy as direct, and the rows it records."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.apis.codec import ANY_DECODER
from tests.support import API_KEY, Proxy, ProxyFactory, upstream_requests

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to the proxy"}]


@pytest.fixture
async def direct(upstream: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=str(upstream.make_url("/v1")), api_key=API_KEY, max_retries=0) as c:
        yield c


def comparable(completion: openai.BaseModel) -> dict:
    data = completion.model_dump()
    for noise in ("id", "created"):
        data.pop(noise, None)
    return data


async def test_non_streamed_same_as_direct_and_recorded(
    proxy: Proxy, upstream: TestServer, direct: openai.AsyncOpenAI
) -> None:
    via = await proxy.client().chat.completions.create(model="fake-model", messages=MESSAGES, user="alice")
    ref = await direct.chat.completions.create(model="fake-model", messages=MESSAGES, user="alice")
    assert comparable(via) == comparable(ref)
    assert via.choices[0].message.content == "Echo: say hello to the proxy "

    [row] = await proxy.rows()
    assert row["method"] == "POST"
    assert row["path"] == "/v1/chat/completions"
    assert row["upstream"] == "default"
    assert row["status"] == 200 and row["upstream_status"] == 200
    assert row["outcome"] == "complete"
    assert row["stream"] is False
    assert row["model_requested"] == "fake-model" and row["model"] == "fake-model"
    assert row["finish_reason"] == "stop"
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        via.usage.prompt_tokens,
        via.usage.completion_tokens,
        via.usage.total_tokens,
    )
    assert row["cached_tokens"] == 0 and row["reasoning_tokens"] == 0
    assert row["usage_source"] == "provider"
    assert row["end_user"] == "alice"
    assert row["ttft_ms"] is None
    assert row["duration_ms"] > 0 and row["finished_at"] >= row["started_at"]
    assert row["key_fingerprint"].startswith("fp_") and API_KEY not in row["key_fingerprint"]
    assert row["error"] is None and row["session_id"] is None

    body = (await proxy.bodies())[row["id"]]
    assert ANY_DECODER.decode(body["request_body"])["messages"] == MESSAGES
    assert (
        ANY_DECODER.decode(body["response_body"])["choices"][0]["message"]["content"] == via.choices[0].message.content
    )
    assert body["request_headers"]["authorization"] == "[redacted]"
    assert body["response_headers"]["x-request-id"] == "req_fake_ok"


async def test_streamed_same_as_direct_usage_hidden_but_recorded(
    proxy: Proxy, upstream: TestServer, direct: openai.AsyncOpenAI
) -> None:
    stream = await proxy.client().chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    via = [c async for c in stream]
    stream = await direct.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    ref = [c async for c in stream]
    assert [comparable(c) for c in via] == [comparable(c) for c in ref]
    assert all(c.usage is None and c.choices for c in via), "client did not ask for usage and must not get it"
    # ...but the proxy asked the upstream for it.
    assert upstream_requests(upstream)[0]["body"]["stream_options"] == {"include_usage": True}

    [row] = await proxy.rows()
    assert row["stream"] is True and row["outcome"] == "complete" and row["finish_reason"] == "stop"
    assert row["usage_source"] == "provider"
    ref_usage = [
        c
        async for c in await direct.chat.completions.create(
            model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    ][-1].usage
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        ref_usage.prompt_tokens,
        ref_usage.completion_tokens,
        ref_usage.total_tokens,
    )
    assert row["completion_tokens"] == len(via) - 2  # role chunk and finish chunk carry no text
    assert 0 < row["ttft_ms"] <= row["duration_ms"]

    body = (await proxy.bodies())[row["id"]]
    assert body["usage_injected"] is True
    assert body["stream_chunks"] and body["stream_chunks"][-1][1] == len(body["response_body"])
    assembled = ANY_DECODER.decode(body["assembled"])
    text = "".join(c.choices[0].delta.content or "" for c in via)
    assert assembled["object"] == "chat.completion"
    assert assembled["choices"][0]["message"] == {"role": "assistant", "content": text, "refusal": None}
    assert assembled["usage"]["completion_tokens"] == row["completion_tokens"]
    assert b'"choices":[]' in body["response_body"], "raw record keeps the usage chunk the client did not see"


async def test_stream_with_usage_requested_gets_it(proxy: Proxy) -> None:
    stream = await proxy.client().chat.completions.create(
        model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    [row] = await proxy.rows()
    assert row["total_tokens"] == chunks[-1].usage.total_tokens
    assert (await proxy.bodies())[row["id"]]["usage_injected"] is False


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls(proxy: Proxy, direct: openai.AsyncOpenAI, stream: bool) -> None:
    kwargs = {
        "model": "fake-tools",
        "messages": MESSAGES,
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    }
    if stream:
        chunks = [c async for c in await proxy.client().chat.completions.create(stream=True, **kwargs)]
        ref = [c async for c in await direct.chat.completions.create(stream=True, **kwargs)]
        assert [comparable(c) for c in chunks] == [comparable(c) for c in ref]
        args = "".join(
            c.choices[0].delta.tool_calls[0].function.arguments
            for c in chunks
            if c.choices and c.choices[0].delta.tool_calls
        )
    else:
        completion = await proxy.client().chat.completions.create(**kwargs)
        args = completion.choices[0].message.tool_calls[0].function.arguments
    assert ANY_DECODER.decode(args) == {"city": "Paris", "unit": "celsius"}
    [row] = await proxy.rows()
    assert row["finish_reason"] == "tool_calls"
    if stream:
        assembled = ANY_DECODER.decode((await proxy.bodies())[row["id"]]["assembled"])
        call = assembled["choices"][0]["message"]["tool_calls"][0]
        assert call == {"id": "call_fake1", "type": "function", "function": {"name": "get_weather", "arguments": args}}


async def test_n_greater_than_one_assembles_each_choice(proxy: Proxy) -> None:
    chunks = [
        c
        async for c in await proxy.client().chat.completions.create(
            model="fake-model", messages=MESSAGES, stream=True, n=2
        )
    ]
    texts = {0: "", 1: ""}
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] += choice.delta.content or ""
    [row] = await proxy.rows()
    assembled = ANY_DECODER.decode((await proxy.bodies())[row["id"]]["assembled"])
    assert [c["message"]["content"] for c in assembled["choices"]] == [texts[0], texts[1]]
    assert [c["finish_reason"] for c in assembled["choices"]] == ["stop", "stop"]


@pytest.mark.parametrize(
    ("model", "exc_type"),
    [
        ("fake-error-401", openai.AuthenticationError),
        ("fake-error-429", openai.RateLimitError),
        ("fake-error-500", openai.InternalServerError),
    ],
)
async def test_upstream_errors_reach_client_unchanged(
    proxy: Proxy, direct: openai.AsyncOpenAI, model: str, exc_type: type[openai.APIStatusError]
) -> None:
    with pytest.raises(exc_type) as via:
        await proxy.client().chat.completions.create(model=model, messages=MESSAGES)
    with pytest.raises(exc_type) as ref:
        await direct.chat.completions.create(model=model, messages=MESSAGES)
    assert via.value.status_code == ref.value.status_code
    assert via.value.body == ref.value.body
    assert via.value.request_id == ref.value.request_id
    assert via.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    [row] = await proxy.rows()
    assert row["status"] == via.value.status_code
    assert row["error"] == f"fake upstream error {via.value.status_code}"
    assert row["usage_source"] == "missing" and row["total_tokens"] is None


async def test_embeddings_and_models_recorded_with_usage(proxy: Proxy) -> None:
    client = proxy.client()
    emb = await client.embeddings.create(model="fake-embed", input=["one two", "three"])
    models = await client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    rows = await proxy.rows()
    by_path = {r["path"]: r for r in rows}
    assert by_path["/v1/embeddings"]["prompt_tokens"] == emb.usage.prompt_tokens == 3
    assert by_path["/v1/embeddings"]["completion_tokens"] is None
    assert by_path["/v1/models"]["method"] == "GET" and by_path["/v1/models"]["usage_source"] == "missing"
    # Never billed: no cost, and not an unknown one either (that means "billed but unpriced").
    assert by_path["/v1/models"]["cost_source"] == "none" and by_path["/v1/models"]["cost_usd"] is None
    assert by_path["/v1/embeddings"]["cost_source"] != "none"


async def test_exchange_id_header_names_the_record(proxy: Proxy) -> None:
    raw = await proxy.client().chat.completions.with_raw_response.create(model="fake-model", messages=MESSAGES)
    [row] = await proxy.rows()
    assert raw.headers["x-proxy-exchange-id"] == row["id"]


async def test_passthrough_names_no_record(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(mode="passthrough", max_body_bytes=1000)
    raw = await proxy.client().chat.completions.with_raw_response.create(model="fake-model", messages=MESSAGES)
    assert "x-proxy-exchange-id" not in raw.headers
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{proxy.url}/v1/chat/completions", data=b"x" * 2000) as too_big:
            assert too_big.status == 413 and "X-Proxy-Exchange-Id" not in too_big.headers
        async with http.post(f"{proxy.url}/s/bad%20id/v1/chat/completions", json={}) as bad_session:
            assert bad_session.status == 400 and "X-Proxy-Exchange-Id" not in bad_session.headers
    assert await proxy.rows() == []


async def test_sessions_from_header_and_path_prefix(proxy: Proxy) -> None:
    await proxy.client(default_headers={"X-Proxy-Session": "suite-a"}).chat.completions.create(
        model="fake-model", messages=MESSAGES
    )
    await proxy.client(prefix="/s/suite-b/v1").chat.completions.create(model="fake-model", messages=MESSAGES)
    rows = await proxy.rows()
    assert [r["session_id"] for r in rows] == ["suite-a", "suite-b"]
    assert {r["path"] for r in rows} == {"/v1/chat/completions"}
    with pytest.raises(openai.BadRequestError, match="invalid session id"):
        await proxy.client(default_headers={"X-Proxy-Session": "../etc"}).models.list()


async def test_upstream_refusing_stream_options_gets_the_request_as_sent(proxy: Proxy, upstream: TestServer) -> None:
    """A strict upstream answers 400 to the stream_options the proxy adds: the proxy asks again without
    it (the client sees a normal stream), and stops adding it on that mount."""
    for _ in range(2):
        stream = await proxy.client().chat.completions.create(model="fake-strict", messages=MESSAGES, stream=True)
        chunks = [c async for c in stream]
        assert chunks and chunks[-1].choices[0].finish_reason == "stop"
    sent = [r["body"] for r in upstream_requests(upstream)]
    assert ["stream_options" in b for b in sent] == [True, False, False], "one refusal, then never again"
    rows = await proxy.rows()
    assert [(r["status"], r["outcome"], r["usage_source"]) for r in rows] == [(200, "complete", "missing")] * 2
    bodies = await proxy.bodies()
    assert [bodies[r["id"]]["usage_injected"] for r in rows] == [False, False]


async def test_other_client_errors_are_not_retried(proxy: Proxy, upstream: TestServer) -> None:
    with pytest.raises(openai.BadRequestError):
        await proxy.client().chat.completions.create(
            model="fake-strict", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    assert len(upstream_requests(upstream)) == 1, "the client's own stream_options: its 400 is passed on"
    [row] = await proxy.rows()
    assert row["status"] == 400


async def test_a_non_streamed_body_longer_than_the_record_cap_keeps_its_head(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(max_record_bytes=100)
    via = await proxy.client().chat.completions.create(model="fake-model", messages=MESSAGES)
    assert via.choices[0].message.content == "Echo: say hello to the proxy ", "the client gets the whole body"
    [row] = await proxy.rows()
    stored = (await proxy.bodies())[row["id"]]
    assert len(stored["response_body"]) == 100 and stored["response_truncated"] is True
    assert stored["response_bytes"] > 100 and stored["response_body"].startswith(b'{"id":')
    assert row["outcome"] == "complete" and row["status"] == 200
