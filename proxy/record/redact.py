"""What of a secret may be kept: masked bodies, redacted headers, and keyed fingerprints of API keys.

Invariants:
- A credential is never stored: headers in ``SECRET_HEADERS`` become ``[redacted]`` and an API key is
  reduced to ``fingerprint`` (an HMAC under a secret kept in the database).
- Masking keeps the length: each match keeps its first few characters (``sk-``) and the rest becomes
  ``*``. Stored raw streams therefore keep their byte offsets (``stream_chunks`` stays valid) and JSON
  stays valid (``*`` needs no escaping).
- Patterns are bytes regexes from configuration (``redact_body_patterns``); an empty list disables masking.
  A pattern with a capturing group masks only group 1. That lets a pattern begin with a literal that is
  not part of the secret: the regex engine finds a leading literal with a fast scan, while a pattern
  that begins with a lookbehind is tried at every byte (about 35 times slower on a 12 KB stream body).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping

from proxy.config import DEFAULT_BODY_PATTERNS

KEEP = 3


class BodyRedactor:
    def __init__(self, patterns: Iterable[str] = DEFAULT_BODY_PATTERNS) -> None:
        # Compiled one by one: user patterns may carry their own global flags such as (?i).
        self._regexes = [re.compile(p.encode()) for p in patterns if p]

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return data
        for regex in self._regexes:
            data = regex.sub(_mask, data)
        return data

    def text(self, value: str | None) -> str | None:
        if value is None or not self._regexes:
            return value
        return self(value.encode()).decode("utf-8", "replace")


def _mask(match: re.Match[bytes]) -> bytes:
    found = match.group(0)
    if match.re.groups and match.start(1) >= 0:
        start, end = match.start(1) - match.start(), match.end(1) - match.start()
    else:
        start, end = 0, len(found)
    keep = start + min(KEEP, end - start)
    return found[:keep] + b"*" * (end - keep) + found[end:]


# Never stored, in any form but a fingerprint.
SECRET_HEADERS = frozenset(
    {"authorization", "api-key", "x-api-key", "cookie", "set-cookie", "proxy-authorization", "openai-api-key"}
)
REDACTED = "[redacted]"


def redact_headers(headers: Mapping[str, str], extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """Headers for storage: secrets replaced, names lower-cased, repeated names joined."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        if name in SECRET_HEADERS or name in extra:
            value = REDACTED
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def api_key_of(headers: Mapping[str, str]) -> str | None:
    """The credential a client sent, whichever header carries it."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else auth
    return headers.get("api-key") or headers.get("x-api-key")


@functools.lru_cache(maxsize=1024)
def fingerprint(secret: bytes, api_key: str) -> str:
    """A keyed hash: stable per key, useless for recovering or confirming it without the secret.

    Cached: a proxy sees the same few keys on every request, and the HMAC is per-request work.
    """
    return "fp_" + hmac.new(secret, api_key.encode(), hashlib.sha256).hexdigest()[:24]
