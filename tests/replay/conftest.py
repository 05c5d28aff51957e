"""The replaying proxy the replay tests start after recording through ``start_proxy``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Proxy, ProxyFactory


@pytest.fixture
def start_replay(start_proxy: ProxyFactory) -> ProxyFactory:
    """A proxy in replay mode with no upstream at all; keywords are ``[replay]`` settings (timing instant
    unless given), so a test never waits for recorded gaps it does not measure."""

    async def start(**replay: Any) -> Proxy:
        timing = replay.pop("timing", "instant")
        return await start_proxy(upstream_url="", mode="replay", replay={"timing": timing, **replay})

    return start
