"""Error messages as bodies and streams carry them, and the error bodies the proxy makes itself, in the
shape a family's clients expect. Pure.

Invariants:
- The proxy's own errors carry its ``code`` (``upstream_unreachable``, ``replay_miss``, ...) in every shape.
- OpenAI's shape (``{"error": {"message", "type", "code", "param"}}``) is the product's standard; a family
  whose clients expect another one (Anthropic's SDK for ``/v1/messages``) answers in that one instead.
"""

from __future__ import annotations

from typing import Any

from proxy.apis.codec import JSON_ENCODER

MAX_ERROR_CHARS = 500

# Anthropic's error types by HTTP status (its "Errors" reference); other 4xx are invalid requests.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_message(error: Any) -> str:
    """The message of an ``error`` object (``{"message": ...}``), or the value itself, at most 500 characters."""
    if isinstance(error, dict):
        msg = error.get("message") or error.get("code") or error
        return str(msg)[:MAX_ERROR_CHARS]
    return str(error)[:MAX_ERROR_CHARS]


def openai_error_body(status: int, message: str, type_: str, code: str | None = None, **extra: Any) -> bytes:
    """``{"error": {"message", "type", "code", "param", ...extra}}``: what the OpenAI SDK raises typed errors from."""
    return JSON_ENCODER.encode({"error": {"message": message, "type": type_, "code": code, "param": None, **extra}})


def anthropic_error_body(status: int, message: str, type_: str, code: str | None = None, **extra: Any) -> bytes:
    """``{"type": "error", "error": {"type", "message", "code", ...extra}}``, typed by status as Anthropic does.

    The proxy's own type (``proxy_error``, ``replay_miss``) is no Anthropic error type: the status decides it,
    and the proxy's code says what happened.
    """
    kind = _ANTHROPIC_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    error = {"type": kind, "message": message, "code": code or type_, **extra}
    return JSON_ENCODER.encode({"type": "error", "error": error})
