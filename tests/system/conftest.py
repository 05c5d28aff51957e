"""Fixtures of the system tests: an upstream whose answers are not HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

MALFORMED_ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]


@pytest.fixture
async def malformed_upstream() -> AsyncIterator[str]:
    """An upstream whose answers are not HTTP: aiohttp's error then quotes the request URL."""
    answers = iter(MALFORMED_ANSWERS * 10)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(next(answers))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    server.close()
    await server.wait_closed()
