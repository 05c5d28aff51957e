"""What the test suite shares: databases per test (SQLite file, and PostgreSQL when configured), a proxy
in front of the fake upstream, and the figures fault tests report. Fixtures live in ``tests/conftest.py``."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.config import Settings
from proxy.forward.server import ProxyRunner
from proxy.forward.state import STATE
from proxy.record.recorder import Recorder
from proxy.store import db, migrate
from proxy.store.tables import exchange_bodies, exchanges
from proxy.testing import fake_upstream

# The README's default: a local server with trust auth and a database named `test`.
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _postgres() -> tuple[str | None, str]:
    """The PostgreSQL URL the tests use, or None and why not: the configured one, else the default if it answers."""
    configured = os.environ.get("PROXY_TEST_POSTGRES_URL")
    if configured == "off":
        return None, "PostgreSQL is turned off (PROXY_TEST_POSTGRES_URL=off)"
    if configured:
        return configured, ""
    import asyncpg

    async def answers() -> bool:
        try:
            conn = await asyncpg.connect(DEFAULT_PG_URL.replace("+asyncpg", ""), timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    if asyncio.run(answers()):
        return DEFAULT_PG_URL, ""
    return None, f"no PostgreSQL answers at {DEFAULT_PG_URL} and PROXY_TEST_POSTGRES_URL is not set"


PG_URL, PG_MISSING = _postgres()


API_KEY = "sk-test-SECRET-0123456789abcdefXYZ"


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass
class Database:
    url: str
    engine: AsyncEngine
    kind: str
    path: Path | None
    connect_args: dict[str, Any]

    async def rows(self, *, order: str = "started_at") -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(select(exchanges).order_by(exchanges.c[order]))
            return [dict(r._mapping) for r in result]

    async def bodies(self) -> dict[str, dict[str, Any]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(select(exchange_bodies))
            return {r.exchange_id: dict(r._mapping) for r in result}


async def make_database(kind: str, tmp_path: Path) -> AsyncIterator[Database]:
    if kind == "sqlite":
        path = tmp_path / "proxy.db"
        url = f"sqlite+aiosqlite:///{path}"
        engine = db.create_engine(url)
        await db.enable_wal(engine)
        await migrate.upgrade(engine)
        yield Database(url, engine, kind, path, {})
        await engine.dispose()
        return
    assert PG_URL
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = db.create_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    connect_args = {"server_settings": {"search_path": schema}}
    engine = db.create_engine(PG_URL, connect_args=connect_args)
    await migrate.upgrade(engine)
    try:
        yield Database(PG_URL, engine, kind, None, connect_args)
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.dispose()


class ProxyTestServer(TestServer):
    """A test server running the proxy app as ``proxy serve`` does: through ``ProxyRunner``."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return ProxyRunner(self.app, **kwargs)


def ending(row: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """How a recorded exchange ended: its API family, outcome, status and finish reason."""
    return row["api"], row["outcome"], row["status"], row["finish_reason"]


def upstream_requests(server: TestServer) -> list[dict[str, Any]]:
    return server.app[fake_upstream.REQUESTS]


@dataclass
class Proxy:
    server: TestServer
    database: Database
    clients: list[openai.AsyncOpenAI]

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def recorder(self) -> Recorder:
        return self.server.app[STATE].recorder

    def client(self, prefix: str = "/v1", **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("api_key", API_KEY)
        kwargs.setdefault("max_retries", 0)
        client = openai.AsyncOpenAI(base_url=self.url + prefix, **kwargs)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    async def rows(self) -> list[dict[str, Any]]:
        await self.recorder.flush()
        return await self.database.rows()

    async def bodies(self) -> dict[str, dict[str, Any]]:
        await self.recorder.flush()
        return await self.database.bodies()

    async def wait_rows(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Rows once ``count`` exist: for exchanges that finish after the client has gone."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(rows := await self.rows()) < count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return rows


# Where the proxies under test write from: the product's default (a writer process) unless told.
WRITER = os.environ.get("PROXY_TEST_WRITER", "process")


def make_settings(upstream_url: str, database: Database, tmp_path: Path, **overrides: Any) -> Settings:
    tree: dict[str, Any] = {
        "upstream": {"url": upstream_url},
        "database": {"url": database.url, "auto_migrate": False},
        "recorder": {"spool_dir": str(tmp_path / "spool"), "retry_interval": 0.2, "writer": WRITER},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    return msgspec.convert(tree, Settings)


ProxyFactory = Callable[..., Any]


@dataclass
class FaultReport:
    """Figures the fault tests measure, written as the README's table when PROXY_FAULT_REPORT names a file."""

    rows: list[tuple[str, int, int, str]]

    def add(self, fault: str, requests: int, lost: int, client_sees: str) -> None:
        self.rows.append((fault, requests, lost, client_sees))
