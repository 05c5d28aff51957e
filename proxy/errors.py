"""Errors the proxy itself answers with, in the OpenAI error shape.

``{"error": {"message": ..., "type": ..., "code": ..., "param": null}}``: the shape the OpenAI SDK turns
into its typed exceptions, so a client sees a proxy failure the way it sees an upstream one; the
``X-Proxy-Error`` header (the code) tells the two apart.
"""

from __future__ import annotations

from aiohttp import web

from proxy.apis.codec import JSON_ENCODER
from proxy.headers import EXCHANGE_ID_HEADER, PROXY_ERROR_HEADER


def error_body(message: str, type_: str, code: str | None = None) -> bytes:
    return JSON_ENCODER.encode({"error": {"message": message, "type": type_, "code": code, "param": None}})


def error_response(
    status: int, message: str, type_: str, code: str | None = None, exchange_id: str | None = None
) -> web.Response:
    headers = {PROXY_ERROR_HEADER: code or type_}
    if exchange_id:
        headers[EXCHANGE_ID_HEADER] = exchange_id
    return web.Response(
        status=status,
        body=error_body(message, type_, code),
        content_type="application/json",
        headers=headers,
    )
