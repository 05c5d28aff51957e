"""Running the pytest plugin as a user meets it: generated test files, run by pytest in a process of their own,
with the real SDKs, against the fake upstream on a loopback port in a thread of this process (so a test can count what
reached it and stop it) or a tripwire, an upstream that counts every connection made to it.

Shared by tests/testing/pytest_plugin/; the fixtures building these live in its conftest.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from proxy.replay.export import read_records
from proxy.testing import fake_upstream
from proxy.testing.inprocess import LoopThread


class LiveUpstream:
    """The fake upstream (chat, Messages, ...) on its own event loop thread: ``requests`` is what reached it."""

    def __init__(self) -> None:
        self.app = fake_upstream.create_app()
        self._thread = LoopThread()
        self._runner = web.AppRunner(self.app, access_log=None)
        self.port = self._thread.call(self._start())

    async def _start(self) -> int:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return self._runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.app[fake_upstream.REQUESTS]

    def stop(self) -> None:
        if self._runner.server is not None:
            self._thread.call(self._runner.cleanup())
            self._thread.stop()


class Tripwire:
    """A listening socket that counts connections: any upstream contact shows."""

    def __init__(self) -> None:
        self.connections = 0
        self._thread = LoopThread()
        self._server = self._thread.call(self._start())
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _start(self) -> asyncio.Server:
        async def count(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        return await asyncio.start_server(count, "127.0.0.1", 0)

    def stop(self) -> None:
        self._server.close()
        self._thread.stop()


HEADER = """
import json, os, pathlib, time
import openai, pytest

OUT = pathlib.Path(os.environ["LLM_TEST_OUT"])


def keep(name, value):
    with (OUT / f"{name}.jsonl").open("a") as fh:
        fh.write(json.dumps(value) + "\\n")


def ask(client, text, **extra):
    return client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": text}], **extra)
"""


def module(body: str, **values: Any) -> str:
    """A generated test module: the shared header, its constants, its tests."""
    return "\n".join(f"{name.upper()} = {value!r}" for name, value in values.items()) + "\n" + body


def kept(out: Path, name: str) -> list[Any]:
    path = out / f"{name}.jsonl"
    values = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    path.unlink(missing_ok=True)
    return values


def cassette(pytester: pytest.Pytester, name: str) -> list[Any]:
    with (pytester.path / "cassettes" / f"{name}.jsonl").open("rb") as fh:
        return list(read_records(fh))


# Plugins the generated tests do not use, left out of their runs for speed (hypothesis alone imports for seconds).
UNUSED_PLUGINS = ("-p", "no:hypothesispytest", "-p", "no:aiohttp", "-p", "no:anyio")


def pytest_in(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a process of its own: an inline run would re-import (and so duplicate) the SDK's modules."""
    return pytester.runpytest_subprocess(*UNUSED_PLUGINS, *args, timeout=600)


def record(pytester: pytest.Pytester, upstream: LiveUpstream, *args: str, passed: int) -> pytest.RunResult:
    result = pytest_in(pytester, "--llm-record-mode=once", f"--llm-upstream={upstream.url}", *args)
    result.assert_outcomes(passed=passed)
    return result
