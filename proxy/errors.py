"""Errors the proxy itself answers with, in the shape the request's API family's clients expect.

OpenAI's shape by default, ``{"error": {"message": ..., "type": ..., "code": ..., "param": null}}``: the
one the OpenAI SDK turns into its typed exceptions, so a client sees a proxy failure the way it sees an
upstream one. A family whose clients expect another shape makes its own (``Family.error_body``:
Anthropic's ``{"type": "error", "error": {...}}`` on ``/v1/messages``).
The ``X-Proxy-Error`` header (the code) tells a proxy failure from an upstream one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.apis.errors import openai_error_body
from proxy.apis.family import Family
from proxy.headers import EXCHANGE_ID_HEADER, PROXY_ERROR_HEADER


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    exchange_id: str | None = None,
    family: Family | None = None,
    **extra: Any,
) -> web.Response:
    headers = {PROXY_ERROR_HEADER: code or type_}
    if exchange_id:
        headers[EXCHANGE_ID_HEADER] = exchange_id
    make = family.error_body if family is not None else openai_error_body
    return web.Response(
        status=status,
        body=make(status, message, type_, code, **extra),
        content_type="application/json",
        headers=headers,
    )
