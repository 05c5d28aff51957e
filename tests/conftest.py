"""Shared fixtures: a migrated database per test (SQLite file, and PostgreSQL when configured), the fake
upstream on a loopback port, and a proxy in front of it.

PostgreSQL tests run against ``PROXY_TEST_POSTGRES_URL``, else against the README's default URL when a server
answers there (``.ci/run`` sets it and fails if the server is unreachable). Each test gets its own PostgreSQL
schema, so tests never see each other's rows. What was skipped, and why, is one line at the end of the run."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.forward.app import create_app
from proxy.testing import fake_upstream
from tests.support import (
    BACKENDS,
    PG_MISSING,
    PG_URL,
    Database,
    FaultReport,
    Proxy,
    ProxyFactory,
    ProxyTestServer,
    make_database,
    make_settings,
)
from tests.support.cli import PY, free_port, wait_port


def pytest_configure(config: pytest.Config) -> None:
    # A non-interactive shell starts a background job (`cmd &`, as CI runners and `setsid ... &` do) with
    # SIGINT ignored, and an ignored signal stays ignored across exec: every proxy the tests start would
    # then shrug off the Ctrl-C the tests send it. A handled signal is reset to the default at exec, so
    # with a handler here the children start as they would from a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PG_URL:
        return
    skip = pytest.mark.skip(reason=PG_MISSING)
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line: how many tests were skipped, for which reasons (a silent skip reads as a pass)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: Counter[str] = Counter()
    for report in skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    what = "; ".join(f"{n} because {reason}" for reason, n in reasons.most_common())
    terminalreporter.write_line(f"skipped {len(skipped)} tests: {what}", yellow=True)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async for database in make_database(request.param, tmp_path):
        yield database


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    async for database in make_database("sqlite", tmp_path):
        yield database


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Any]) -> TestServer:
    return await aiohttp_server(fake_upstream.create_app())


@pytest.fixture
async def start_proxy(database: Database, upstream: TestServer, tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    started: list[Proxy] = []

    async def start(upstream_url: str | None = None, **overrides: Any) -> Proxy:
        url = upstream_url if upstream_url is not None else str(upstream.make_url("/v1"))
        settings = make_settings(url, database, tmp_path, **overrides)
        app: web.Application = create_app(settings, database.engine)
        server = ProxyTestServer(app)
        await server.start_server()  # with handler_cancellation=True, as `proxy serve`
        started.append(Proxy(server, database, []))
        return started[-1]

    yield start
    for proxy in started:
        await proxy.close()
        await proxy.server.close()


@pytest.fixture
async def proxy(start_proxy: ProxyFactory) -> Proxy:
    return await start_proxy()


@pytest.fixture(scope="session")
def fault_report() -> Iterator[FaultReport]:
    report = FaultReport([])
    yield report
    target = os.environ.get("PROXY_FAULT_REPORT")
    if target and report.rows:
        merged: dict[str, list[Any]] = {}  # one line per fault, summed over databases and parameters
        for fault, n, lost, sees in report.rows:
            line = merged.setdefault(fault, [0, 0, []])
            line[0] += n
            line[1] += lost
            if sees not in line[2]:
                line[2].append(sees)
        lines = [
            "| fault injected | requests during the fault | records lost | what the client sees |",
            "|---|---|---|---|",
        ]
        lines += [f"| {f} | {n} | {lost} | {'; '.join(sees)} |" for f, (n, lost, sees) in sorted(merged.items())]
        Path(target).write_text("\n".join(lines) + "\n")


@pytest.fixture
def fake_upstream_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "proxy.testing.fake_upstream", "--port", str(port)], stderr=subprocess.PIPE)
    wait_port(port, proc)
    yield port
    proc.terminate()
    proc.wait(10)
