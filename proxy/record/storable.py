"""Text as both databases and the spool can hold it: valid UTF-8, without NUL.

Invariants:
- A client or an upstream may put any byte in a header, the query or the path. aiohttp hands such a
  value on as ``str`` with each byte that is not UTF-8 as a lone surrogate (``surrogateescape``); no
  UTF-8 encoder accepts that string (msgpack, JSON, SQLite and PostgreSQL all refuse it), and
  PostgreSQL refuses NUL in any text or JSON value.
- ``text`` writes each such byte, and NUL, as the four characters ``\\xNN``: ``caf\\xe9`` for the byte
  0xE9 after ``caf``. Valid text without NUL comes back unchanged (the same object).
- ``make_storable`` applies it, in place, to every text field of an Exchange; bodies are bytes and are
  stored exactly as received.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

from proxy.record.exchange import Exchange

_TEXT_FIELDS = (
    "id",
    "session_id",
    "upstream",
    "api",
    "method",
    "path",
    "query",
    "key_fingerprint",
    "requested_model",
    "user",
    "error",
    "returned_model",
    "finish_reason",
    "match_key",
    "price_ref",
)
_text_values = operator.attrgetter(*_TEXT_FIELDS)


def text(value: str) -> str:
    if value.isascii():
        return value.replace("\x00", "\\x00") if "\x00" in value else value
    try:
        value.encode()
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")  # the bytes as received
        except UnicodeEncodeError:  # a surrogate no byte stands for (made in Python, never off the wire)
            raw = value.encode("utf-8", "surrogatepass")
        value = raw.decode("utf-8", "backslashreplace")
    return value.replace("\x00", "\\x00") if "\x00" in value else value


def _plain(values: Iterable[str | None]) -> bool:
    """Every value is ASCII without NUL (what nearly every record holds): ``text`` would change none."""
    joined = "".join(filter(None, values))
    return joined.isascii() and "\x00" not in joined


def headers(values: dict[str, str]) -> dict[str, str]:
    if _plain(values) and _plain(values.values()):
        return values
    for name, value in values.items():
        if text(name) is not name or text(value) is not value:
            return {text(k): text(v) for k, v in values.items()}
    return values


def make_storable(ex: Exchange) -> Exchange:
    if not _plain(_text_values(ex)):
        for name in _TEXT_FIELDS:
            value = getattr(ex, name)
            if value is not None:
                setattr(ex, name, text(value))
    ex.request_headers = headers(ex.request_headers)
    ex.response_headers = headers(ex.response_headers)
    return ex
