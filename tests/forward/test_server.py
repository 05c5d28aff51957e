"""The proxy's HTTP server: parser reasons without the quoted bytes, and an access log without credentials."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, InvalidHeader

from proxy.forward.server import parser_reason
from tests.support import Proxy

SECRET = "AIzaSyD-0123456789abcdefghijklmnopqrstu"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (BadHttpMessage(f"Invalid header value char:\n\n  b'Authorization: Bearer {SECRET}\\x01'\n      ^"),
         "Invalid header value char"),
        (BadHttpMessage(f"Bad status line:\n  Expected CRLF after version:\n\n  b'POST /?key={SECRET} HTTP/1.1\\n'"),
         "Bad status line: Expected CRLF after version"),
        (InvalidHeader(f"X-Key: {SECRET}".encode()), "Invalid HTTP header"),
        (BadStatusLine(f"GET /?key={SECRET}"), "Bad status line"),
        (None, "malformed request"),
    ],
)
def test_parser_reason_keeps_the_reason_and_drops_the_quoted_bytes(exc: BaseException | None, reason: str) -> None:
    assert parser_reason(exc) == reason


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_access_log_lines_carry_no_query_credential(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async with aiohttp.ClientSession() as http:
        url = f"{proxy.url}/v1/models?alt=x&key={SECRET}"
        async with http.get(url, headers={"Referer": f"http://app/?token={SECRET}"}) as resp:
            assert resp.status == 200
    # The fake upstream behind the proxy logs its own access lines (key included: it is the upstream).
    [line] = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access" and r.module == "server"]
    assert "GET /v1/models?alt=x&key=[redacted] HTTP/1.1" in line and "?token=[redacted]" in line
    assert SECRET not in line
