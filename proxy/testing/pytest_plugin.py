"""Replay in a test suite: the ``llm_proxy`` fixture records a test's LLM calls once, then replays them.

Registered through the ``pytest11`` entry point (``pip install 'llm-recording-proxy[pytest]'``).

Invariants:
- Light at import: pytest loads this module in every run of every project that has the package
  installed, so the proxy itself (aiohttp, SQLAlchemy) is imported only when a test first asks for it.
- The fixture sets ``OPENAI_BASE_URL`` (the ``/v1`` mount) and ``ANTHROPIC_BASE_URL`` (the ``/anthropic``
  mount; the proxy forwards and replays any ``/v1/`` path byte for byte, so Messages traffic is caught
  today, and never reaches the real API in replay) for the test only, and restores them after.
- A request the cassette cannot answer fails the test with the proxy's explanation (the closest
  recordings and their differing fields), even when the code under test caught the error.
- The product never imports this room.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from proxy.config import Mode, Timing
from proxy.testing.modes import ANTHROPIC_UPSTREAM, Options, RecordMode

if TYPE_CHECKING:
    from proxy.testing.cassettes import Cassette
    from proxy.testing.inprocess import InProcessProxy, Miss, Runtime, TestContext

MARKER = "llm_cassette"
# What the SDKs need to build a client when replay makes no call upstream (set only when absent).
REPLAY_KEYS = {"OPENAI_API_KEY": "llm-proxy-replay", "ANTHROPIC_API_KEY": "llm-proxy-replay"}
SHOWN_MISSES = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llm-proxy", "recording and replaying LLM calls (llm_proxy fixture)")
    group.addoption(
        "--llm-record-mode",
        choices=[m.value for m in RecordMode],
        default=RecordMode.NONE.value,
        help="none: replay only (default); once: record missing cassettes; new: record what is not in the "
        "cassette and append it; all: record everything again",
    )
    group.addoption(
        "--llm-upstream",
        metavar="URL",
        help="OpenAI-compatible base URL to record from (default: $PROXY_UPSTREAM_URL)",
    )
    group.addoption(
        "--llm-anthropic-upstream",
        metavar="URL",
        default=ANTHROPIC_UPSTREAM,
        help=f"where the Anthropic mount records from (default: {ANTHROPIC_UPSTREAM})",
    )
    group.addoption(
        "--llm-replay-timing",
        choices=[t.value for t in Timing],
        default=Timing.INSTANT.value,
        help="instant: replayed streams at once (default); original: at their recorded pace",
    )


@dataclass(frozen=True)
class LLMProxy:
    """What the ``llm_proxy`` fixture gives a test."""

    url: str  # http://127.0.0.1:PORT
    base_url: str  # url + /v1: the OpenAI base URL
    anthropic_base_url: str  # url + /anthropic: the Anthropic SDK's base URL
    cassette: Path
    record_mode: RecordMode
    mode: Mode  # what the proxy does for this test: replay, record, or auto (`new`)
    session: str  # the session the test's requests are recorded and replayed under


class Plugin:
    """Per pytest process (each xdist worker has its own): options, and the runtime once a test needs it."""

    def __init__(self, config: pytest.Config) -> None:
        workerinput = getattr(config, "workerinput", {})
        self.options = Options(
            record_mode=RecordMode(config.getoption("llm_record_mode")),
            upstream=config.getoption("llm_upstream") or os.environ.get("PROXY_UPSTREAM_URL") or None,
            anthropic_upstream=config.getoption("llm_anthropic_upstream"),
            timing=Timing(config.getoption("llm_replay_timing")),
            run_id=workerinput.get("testrunuid") or uuid.uuid4().hex,
        )
        self._runtime: Runtime | None = None

    def runtime(self) -> Runtime:
        if self._runtime is None:
            from proxy.testing.inprocess import Runtime

            self._runtime = Runtime(self.options)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


@dataclass
class ActiveTest:
    """A test using the proxy: what the report hook needs to explain its misses."""

    proxy: InProcessProxy
    context: TestContext
    record_mode: RecordMode

    def explain(self, misses: list[Miss]) -> str:
        from proxy.replay.matchkey import show_pair

        cassette = self.proxy.cassette
        state = f"holds {self.proxy.recordings} recording(s)" if cassette.exists() else "does not exist"
        lines = [
            f"llm_proxy: {len(misses)} request(s) had no recording (record mode {self.record_mode}; "
            f"cassette {cassette.path} {state}; this test's session {self.context.session!r})"
        ]
        for miss in misses[:SHOWN_MISSES]:
            # The proxy's message lists the closest recordings too; they are shown below, one field a line.
            message = miss.message.split(" Closest recorded requests:")[0] if miss.closest else miss.message
            lines += ["", f"{miss.method} {miss.path}: {message}"]
            for n, closest in enumerate(miss.closest, 1):
                copies = closest.get("recordings") or 1
                lines.append(
                    f"  closest ({n}): {closest.get('id')} in session {closest.get('session_id')!r}"
                    + (f" ({copies} recordings of it)" if copies > 1 else "")
                )
                for d in closest.get("differences") or []:
                    mine, theirs = show_pair(d.get("request"), d.get("recorded"))
                    lines.append(f"      {d.get('path') or '/'}: {mine} (recorded {theirs})")
                if not closest.get("differences"):
                    lines.append(
                        "      the same request, but not replayable (no body stored, or partial and not included)"
                    )
        if len(misses) > SHOWN_MISSES:
            lines.append(f"... and {len(misses) - SHOWN_MISSES} more")
        lines += [
            "",
            "To record what is missing: --llm-record-mode=new --llm-upstream URL (all: record everything again).",
        ]
        return "\n".join(lines)


PLUGIN = pytest.StashKey[Plugin]()
ACTIVE = pytest.StashKey[ActiveTest]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(name=None, **replay): the test's cassette: `name` shares one between tests "
        "(cassettes/<module>/<name>.jsonl; a name with '/' is relative to cassettes/); keywords are "
        "[replay] settings: ignore=[...], on_exhausted=..., include_partial=..., timing=...",
    )
    config.stash[PLUGIN] = Plugin(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.stash.get(PLUGIN, None)
    if plugin is not None:
        plugin.close()


def _marker(item: pytest.Item) -> tuple[str | None, dict[str, Any]]:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None, {}
    kwargs = dict(marker.kwargs)
    name = kwargs.pop("name", None)
    if len(marker.args) > 1 or (marker.args and name is not None):
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARKER} takes one cassette name")
    return (marker.args[0] if marker.args else name), kwargs


def _cassette(item: pytest.Item, name: str | None) -> tuple[Cassette, str]:
    from proxy.testing.cassettes import Cassette, session_name

    qualname = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else item.name
    return Cassette.locate(item.path, qualname, name), session_name(item.path.stem, qualname)


@pytest.fixture
def llm_proxy(request: pytest.FixtureRequest) -> Iterator[LLMProxy]:
    """A recording proxy for this test, with its cassette loaded; OPENAI_BASE_URL points at it meanwhile."""
    from proxy.config import ConfigError
    from proxy.testing.cassettes import CassetteError
    from proxy.testing.inprocess import NeedsUpstream, TestContext

    plugin = request.config.stash[PLUGIN]
    item = request.node
    name, replay = _marker(item)
    try:
        cassette, session = _cassette(item, name)
        proxy = plugin.runtime().open(cassette, replay)
    except (CassetteError, ConfigError, NeedsUpstream) as exc:
        pytest.fail(f"llm_proxy: {exc}", pytrace=False)
    context = TestContext(session)
    proxy.current = context
    item.stash[ACTIVE] = ActiveTest(proxy, context, plugin.options.record_mode)
    handle = LLMProxy(
        url=proxy.url,
        base_url=f"{proxy.url}/v1",
        anthropic_base_url=f"{proxy.url}/anthropic",
        cassette=cassette.path,
        record_mode=plugin.options.record_mode,
        mode=proxy.mode,
        session=session,
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_BASE_URL", handle.base_url)
        env.setenv("ANTHROPIC_BASE_URL", handle.anthropic_base_url)
        if proxy.mode is Mode.REPLAY:
            for var, placeholder in REPLAY_KEYS.items():
                if not os.environ.get(var):
                    env.setenv(var, placeholder)
        yield handle
    try:
        plugin.runtime().finish(proxy, context)
    except CassetteError as exc:
        pytest.fail(f"llm_proxy: {exc}", pytrace=False)


@pytest.fixture(autouse=True)
def _llm_cassette_marker(request: pytest.FixtureRequest) -> None:
    """A test with the marker gets the proxy without asking for the fixture."""
    if request.node.get_closest_marker(MARKER) is not None:
        request.getfixturevalue("llm_proxy")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield  # type: ignore[misc]
    active = item.stash.get(ACTIVE, None)
    misses = active.context.take_misses() if active is not None else []
    if active is not None and misses:
        text = active.explain(misses)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
        elif hasattr(report.longrepr, "addsection"):
            report.longrepr.addsection("llm_proxy: replay misses", text)
        else:
            report.sections.append(("llm_proxy: replay misses", text))
    return report  # type: ignore[return-value]
