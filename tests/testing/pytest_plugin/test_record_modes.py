"""The pytest plugin's record modes and cassette sharing: ``new`` appends, ``all`` rewrites, a marker shares a
cassette, xdist workers write one file, and setup errors say what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.plugin_runs import HEADER, LiveUpstream, cassette, kept, module, pytest_in, record

pytest_plugins = ["pytester"]


GROWING = (
    HEADER
    + """


def test_chat(llm_proxy):
    client = openai.OpenAI()
    keep("chat", ask(client, "first question").id)
    if EXTRA:
        keep("chat", ask(client, EXTRA).id)
"""
)


def test_new_appends_only_the_new_exchange(pytester: pytest.Pytester, live_upstream: LiveUpstream, out: Path) -> None:
    pytester.makepyfile(test_grow=module(GROWING, extra=None))
    record(pytester, live_upstream, passed=1)
    path = pytester.path / "cassettes/test_grow/test_chat.jsonl"
    first_line = path.read_bytes().splitlines()[1]
    pytester.makepyfile(test_grow=module(GROWING, extra="second question"))
    sent = len(live_upstream.requests)

    pytest_in(pytester, "--llm-record-mode=new", f"--llm-upstream={live_upstream.url}").assert_outcomes(passed=1)
    assert [r["body"]["messages"][0]["content"] for r in live_upstream.requests[sent:]] == ["second question"]
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and lines[1] == first_line, "the recorded exchange is kept byte for byte"
    assert json.loads(lines[0])["exchanges"] == 2
    recorded = kept(out, "chat")

    live_upstream.stop()
    pytest_in(pytester).assert_outcomes(passed=1)
    assert kept(out, "chat") == recorded[1:], "both answers replay"
    before = path.read_bytes()
    pytest_in(pytester, "--llm-record-mode=new", "--llm-upstream=http://127.0.0.1:9/v1").assert_outcomes(passed=1)
    assert path.read_bytes() == before, "new with nothing new leaves the cassette untouched"


def test_all_rewrites(pytester: pytest.Pytester, live_upstream: LiveUpstream, out: Path) -> None:
    pytester.makepyfile(test_grow=module(GROWING, extra="second question"))
    record(pytester, live_upstream, passed=1)
    old = {r.id for r in cassette(pytester, "test_grow/test_chat")}
    sent = len(live_upstream.requests)
    pytest_in(pytester, "--llm-record-mode=all", f"--llm-upstream={live_upstream.url}").assert_outcomes(passed=1)
    assert len(live_upstream.requests) == sent + 2, "every request recorded again"
    new = {r.id for r in cassette(pytester, "test_grow/test_chat")}
    assert len(new) == 2 and not new & old, "the cassette holds only the new recordings"


SHARED = (
    HEADER
    + """
pytestmark = pytest.mark.llm_cassette("shared", ignore=["temperature"])


def test_first(llm_proxy):
    keep("shared", ask(openai.OpenAI(), "common question", temperature=TEMPERATURE).id)


def test_second():  # the marker alone brings the proxy
    client = openai.OpenAI()
    keep("shared", [ask(client, "common question").id, ask(client, "only the second asks").id])
"""
)


def test_a_shared_cassette_via_the_marker(pytester: pytest.Pytester, live_upstream: LiveUpstream, out: Path) -> None:
    pytester.makepyfile(test_shared=module(SHARED, temperature=0.2))
    record(pytester, live_upstream, passed=2)
    assert [p.name for p in (pytester.path / "cassettes/test_shared").iterdir()] == ["shared.jsonl"]
    records = cassette(pytester, "test_shared/shared")
    assert [r.session_id for r in records] == ["test_shared::test_first"] + ["test_shared::test_second"] * 2
    first, (_, only_second) = kept(out, "shared")

    live_upstream.stop()
    pytester.makepyfile(test_shared=module(SHARED, temperature=0.9))  # ignored by the marker's match rules
    pytest_in(pytester).assert_outcomes(passed=2)
    assert kept(out, "shared") == [first, [first, only_second]], "tests sharing a cassette share its recordings"
    pytest_in(pytester, "-k", "test_second").assert_outcomes(passed=1)
    assert kept(out, "shared") == [[first, only_second]], "and each starts at the first recording"


XDIST = (
    HEADER
    + """
@pytest.mark.parametrize("n", range(6))
@pytest.mark.llm_cassette("pool")
def test_pooled(n):
    keep("worker", os.environ.get("PYTEST_XDIST_WORKER"))
    assert ask(openai.OpenAI(), f"question {n}").choices[0].message.content == f"Echo: question {n} "


@pytest.mark.parametrize("n", range(2))
def test_own(llm_proxy, n):
    assert ask(openai.OpenAI(), f"own {n}").choices[0].message.content == f"Echo: own {n} "
"""
)


def test_two_xdist_workers(pytester: pytest.Pytester, live_upstream: LiveUpstream, out: Path) -> None:
    pytester.makepyfile(test_x=XDIST)
    args = ("-n", "2")
    result = pytest_in(pytester, "--llm-record-mode=once", f"--llm-upstream={live_upstream.url}", *args)
    result.assert_outcomes(passed=8)
    assert set(kept(out, "worker")) == {"gw0", "gw1"}, "both workers wrote the shared cassette"
    pooled = cassette(pytester, "test_x/pool")
    sessions = {r.session_id or "" for r in pooled}
    assert len(pooled) == len(sessions) == 6, "every worker's recordings are in the one file"
    assert all(s.startswith("test_x::test_pooled-") for s in sessions)
    assert len(cassette(pytester, "test_x/test_own[0]")) == len(cassette(pytester, "test_x/test_own[1]")) == 1

    live_upstream.stop()
    pytest_in(pytester, *args).assert_outcomes(passed=8)


BAD_MARKERS = """
import pytest


@pytest.mark.llm_cassette(on_exhausted="sometimes")
def test_bad_option():
    pass


@pytest.mark.llm_cassette(sessions=["other"])
def test_sessions():
    pass
"""


def test_setup_errors_say_what_to_fix(pytester: pytest.Pytester, out: Path) -> None:
    pytester.makepyfile(test_grow=module(GROWING, extra=None))
    result = pytest_in(pytester, "--llm-record-mode=once")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*llm_proxy: --llm-record-mode=once records, and needs --llm-upstream URL*"])
    (pytester.path / "cassettes/test_grow").mkdir(parents=True)
    (pytester.path / "cassettes/test_grow/test_chat.jsonl").write_text('{"format": "something else"}\n')
    pytester.makepyfile(test_markers=BAD_MARKERS)
    result = pytest_in(pytester)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "*llm_proxy: cassette *test_chat.jsonl: line 1: format 'something else'*",
            "*llm_proxy: replay.on_exhausted: Invalid enum value 'sometimes' (valid: error, repeat-last, cycle)*",
            "*llm_proxy: llm_cassette: 'sessions' is not a marker option*",
        ]
    )
