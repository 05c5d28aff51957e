"""Re-send a recorded session to an upstream that answers differently, and read what the report says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from proxy.commands.replay import ResendOptions, resend_session
from proxy.config import ConfigError
from proxy.replay.report import markdown
from proxy.store import recordings
from proxy.testing import fake_upstream
from tests.support import Database, ProxyFactory, make_settings, upstream_requests

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def record_session(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy()
    chat = proxy.client("/s/orig/v1").chat.completions
    await chat.create(model="fake-model", messages=msgs("tell me about Paris"))
    [c async for c in await chat.create(model="fake-model", messages=msgs("stream it please"), stream=True, n=2)]
    await chat.create(model="fake-tools", messages=msgs("weather?"), tools=TOOLS)
    [c async for c in await chat.create(model="fake-tools", messages=msgs("weather?"), tools=TOOLS, stream=True)]
    await proxy.recorder.flush()


@pytest.fixture
async def changed_upstream(aiohttp_server: Callable[..., Any]) -> TestServer:
    app = fake_upstream.create_app()
    app[fake_upstream.CONTROL].reply_prefix = "Changed: "
    app[fake_upstream.CONTROL].tool_arguments = '{"city": "Lyon", "unit": "celsius"}'
    return await aiohttp_server(app)


async def test_resend_reports_the_differences_and_links_the_sessions(
    start_proxy: ProxyFactory, database: Database, changed_upstream: TestServer, tmp_path: Path
) -> None:
    await record_session(start_proxy)
    target = str(changed_upstream.make_url("/v1"))
    settings = make_settings(target, database, tmp_path)
    options = ResendOptions(session="orig", new_session="orig-b", concurrency=2, api_key="sk-other-key-123")
    report = await resend_session(settings, database.engine, options)

    sent = upstream_requests(changed_upstream)
    assert [r["body"]["messages"][0]["content"] for r in sent][:1] == ["tell me about Paris"], "recorded order"
    assert all(r["headers"]["Authorization"] == "Bearer sk-other-key-123" for r in sent)

    t = report["totals"]
    assert (t["requests"], t["answered"], t["failed"], t["status_changed"]) == (4, 4, 0, 0)
    assert t["content_changed"] == 2 and t["content_changed_beyond_whitespace"] == 2
    assert t["tool_calls_changed"] == 2 and t["changed"] == 4
    # The fake counts one completion token per reply word and choice; "Changed: " is one more word,
    # in each of five choices (the tool calls count their unused reply too).
    assert t["completion_tokens"]["delta"] == 5 and t["prompt_tokens"]["delta"] == 0
    plain, streamed, tools, tools_streamed = report["requests"]
    assert plain["content"][0]["exact"] is False and 0.6 < plain["content"][0]["similarity"] < 1
    assert [c["choice"] for c in streamed["content"]] == [0, 1]
    assert streamed["ttft_ms"]["original"] is not None and streamed["ttft_ms"]["delta"] is not None
    for entry in (tools, tools_streamed):
        assert entry["content_changed"] is False
        assert entry["tool_calls"] == ['choice 0 call 0 (get_weather) arguments /city: "Lyon" (was "Paris")']
    assert all(e["other"] == [] for e in report["requests"]), "id, created, system_fingerprint are noise"

    link = await recordings.links_of(database.engine, "orig-b")
    assert link is not None and link["source_session_id"] == "orig" and link["relation"] == "resend"
    assert link["target"] == target and link["summary"]["changed"] == 4
    assert sorted(link["pairs"].values()) == sorted(e["original_id"] for e in report["requests"])
    assert set(link["pairs"]) == {e["new_id"] for e in report["requests"]}
    new_rows = [r for r in await database.rows() if r["session_id"] == "orig-b"]
    assert len(new_rows) == 4 and all(r["outcome"] == "complete" for r in new_rows)

    text = markdown(report)
    assert "# Re-send of session `orig` as `orig-b`" in text
    assert '/city: "Lyon" (was "Paris")' in text and "| 4 | 4 | 0 | 4 | 2 | 2 | 2 |" in text
    msgspec.json.encode(report)  # the JSON report is plain data

    with pytest.raises(ConfigError, match="already has exchanges"):
        await resend_session(settings, database.engine, options)


async def test_model_override_and_identical_answers(
    start_proxy: ProxyFactory, database: Database, upstream: TestServer, tmp_path: Path
) -> None:
    await record_session(start_proxy)
    settings = make_settings(str(upstream.make_url("/v1")), database, tmp_path)
    same = await resend_session(settings, database.engine, ResendOptions(session="orig", new_session="same"))
    assert same["totals"]["changed"] == 0 and same["totals"]["mean_similarity"] == 1.0

    other = await resend_session(
        settings, database.engine, ResendOptions(session="orig", new_session="m", model="fake-model")
    )
    assert all(r["body"]["model"] == "fake-model" for r in upstream_requests(upstream)[-4:])
    tools = other["requests"][2]
    assert tools["model"] == {"original": "fake-tools", "new": "fake-model"}
    assert tools["finish_reason"] == {"original": ["tool_calls"], "new": ["stop"]}
    assert tools["tool_calls"] == ['choice 0 call 0 removed: get_weather({"city": "Paris", "unit": "celsius"})']
    assert other["totals"]["finish_reason_changed"] == 2


async def test_unknown_session_is_a_config_error(database: Database, tmp_path: Path) -> None:
    settings = make_settings("http://127.0.0.1:9/v1", database, tmp_path)
    with pytest.raises(ConfigError, match="no exchanges with stored requests in session 'ghost'"):
        await resend_session(settings, database.engine, ResendOptions(session="ghost"))
