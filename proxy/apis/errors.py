"""Error messages as bodies and streams carry them, shortened for the record. Pure."""

from __future__ import annotations

from typing import Any

MAX_ERROR_CHARS = 500


def error_message(error: Any) -> str:
    """The message of an ``error`` object (``{"message": ...}``), or the value itself, at most 500 characters."""
    if isinstance(error, dict):
        msg = error.get("message") or error.get("code") or error
        return str(msg)[:MAX_ERROR_CHARS]
    return str(error)[:MAX_ERROR_CHARS]
