"""Masking secrets in bodies."""

from __future__ import annotations

from proxy.apis.codec import ANY_DECODER
from proxy.record.redact import BodyRedactor


def test_body_redactor_rules() -> None:
    redact = BodyRedactor()
    data = b'{"a": "sk-or-v1-0123456789abcdef0123", "b": "task-0123456789abcdef0123", "c": "sk-short"}'
    out = redact(data)
    assert len(out) == len(data) and ANY_DECODER.decode(out)["a"] == "sk-" + "*" * 26
    assert b"task-0123456789abcdef0123" in out and b"sk-short" in out
    assert BodyRedactor([])(data) == data
    assert BodyRedactor([r"secret-\d+"])(b"x secret-12345 y") == b"x sec********* y"
    bearer = b'{"h": "Authorization: Bearer abcdefghijklmnop0123", "l": "BEARER abcdefghijklmnop0123"}'
    assert redact(bearer) == bearer.replace(b"abcdefghijklmnop0123", b"abc" + b"*" * 17)
    # A capturing group masks only the group; the literal before it stays readable.
    assert BodyRedactor([r"token=(\w{6,})"])(b"a token=abcdefgh b") == b"a token=abc***** b"
