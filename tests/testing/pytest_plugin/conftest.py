"""Fixtures of the pytest plugin's tests: the live fake upstream, the tripwire, and the user's environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import API_KEY
from tests.support.plugin_runs import LiveUpstream, Tripwire


@pytest.fixture
def live_upstream() -> Iterator[LiveUpstream]:
    up = LiveUpstream()
    yield up
    up.stop()


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.stop()


@pytest.fixture
def out(tmp_path: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where generated tests keep what they received; the environment a user's shell would have."""
    monkeypatch.setenv("LLM_TEST_OUT", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    for var in ("PROXY_UPSTREAM_URL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return tmp_path
