"""What of a secret may be kept: masked bodies, redacted headers and queries, and keyed fingerprints of API keys.

The one home of redaction: the handler, the writer, the spool, error texts, the access log and the log
scrubber all call into this module (``Redactor``, built once per app from the settings).

Invariants:
- A credential is never stored, logged or echoed: headers in ``SECRET_HEADERS`` become ``[redacted]``,
  so do the values of credential query parameters (``redact_query_params``), and an API key is reduced
  to ``fingerprint`` (an HMAC under a secret kept in the database).
- Every stored value derived from client input (bodies, header values, session id, ``user``, model, path,
  error texts) passes the same masking (``Redactor.exchange``), before the database or the spool.
- Every step is idempotent (masking a masked value changes nothing) and never raises on odd input:
  text that is not valid UTF-8 (surrogate-escaped header bytes) is masked and kept as it came.
- Masking keeps the length: each match keeps its first few characters (``sk-``) and the rest becomes
  ``*``. Stored raw streams therefore keep their byte offsets (``stream_chunks`` stays valid) and JSON
  stays valid (``*`` needs no escaping).
- Patterns are bytes regexes from configuration (``redact_body_patterns``); an empty list disables masking.
  A pattern with a capturing group masks only group 1. That lets a pattern begin with a literal that is
  not part of the secret: the regex engine finds a leading literal with a fast scan, while a pattern
  that begins with a lookbehind is tried at every byte (about 35 times slower on a 12 KB stream body).
- A body of any size is masked a window at a time (``steps``), so the writer can yield to the loop
  between windows: masking a 32 MiB body never stalls client traffic.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
from collections.abc import Generator, Iterable, Mapping
from urllib.parse import unquote_plus

from proxy.config import DEFAULT_BODY_PATTERNS, DEFAULT_QUERY_PARAMS, Settings
from proxy.record.exchange import Exchange
from proxy.record.slices import run_through

KEEP = 3
# Bytes of a body scanned per step: about a millisecond of matching.
WINDOW = 256 << 10
# How far past its window a match may reach and still be masked in one piece (a secret is far shorter).
OVERLAP = 4 << 10


class BodyRedactor:
    def __init__(self, patterns: Iterable[str] = DEFAULT_BODY_PATTERNS) -> None:
        # Compiled one by one: user patterns may carry their own global flags such as (?i).
        self._regexes = [re.compile(p.encode()) for p in patterns if p]

    def __call__(self, data: bytes) -> bytes:
        if len(data) > WINDOW:
            return run_through(self.steps(data))
        # One window (a header value, a model name, most bodies): ``steps`` without its generator.
        out: bytearray | None = None
        for regex in self._regexes:
            for match in regex.finditer(data):
                out = _masked(out, data, match)
        return data if out is None else bytes(out)

    def steps(self, data: bytes) -> Generator[None, None, bytes]:
        """Mask ``data`` a ``WINDOW`` at a time, yielding after each window; returns the masked bytes.

        Every pattern is matched against the bytes as received (not against another pattern's masks).
        A match may run ``OVERLAP`` bytes past its window, and one that reaches even that far is tried
        again from its start (without an end), so a secret straddling windows is masked whole, as in
        one pass.
        """
        out: bytearray | None = None
        size = len(data)
        for regex in self._regexes:
            pos = 0
            while pos < size:
                end = min(size, pos + WINDOW)
                scan_end = min(size, end + OVERLAP)  # a match starting in this window may end past it
                after = end
                for match in regex.finditer(data, pos, scan_end):
                    if match.start() >= end:
                        break  # the next window's
                    if match.end() == scan_end < size:  # it may go on further
                        if match.start() > pos:
                            after = match.start()  # try it again, from its start, in the next window
                            break
                        match = regex.match(data, pos) or match  # a secret longer than a window
                    out = _masked(out, data, match)
                    after = max(after, match.end())
                pos = after
                yield
        return data if out is None else bytes(out)

    def text(self, value: str | None) -> str | None:
        if not value or not self._regexes:
            return value
        return self(value.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


def _masked(out: bytearray | None, data: bytes, match: re.Match[bytes]) -> bytearray:
    """``out`` (``data``'s copy, made at the first match) with ``match`` masked."""
    if out is None:
        out = bytearray(data)
    out[match.start() : match.end()] = _mask(match)
    return out


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
    out = {key.lower(): value for key, value in headers.items()}
    if len(out) != len(headers):  # a repeated name: its values joined, in order
        out = {}
        for key, value in headers.items():
            name = key.lower()
            out[name] = f"{out[name]}, {value}" if name in out else value
    # Looking the few secret names up is cheaper than testing every header against them.
    for names in (SECRET_HEADERS, extra):
        for name in names:
            if name in out:
                out[name] = REDACTED
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

    Cached: a proxy sees the same few keys on every request, and the HMAC is per-request work. Of the
    key's bytes as sent: aiohttp keeps a header's bytes that are not UTF-8 as surrogates.
    """
    return "fp_" + hmac.new(secret, api_key.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:24]


class Redactor:
    """Every masking the proxy applies to what it keeps, logs or echoes, configured once per app.

    Called like a ``BodyRedactor`` for bodies (same length); ``text`` for free text (error messages,
    log lines), ``query`` for a query string, ``exchange`` for a whole record before it is stored.
    """

    def __init__(
        self,
        body_patterns: Iterable[str] = DEFAULT_BODY_PATTERNS,
        query_params: Iterable[str] = DEFAULT_QUERY_PARAMS,
        headers: Iterable[str] = (),
    ) -> None:
        self.body = BodyRedactor(body_patterns)
        self.params = frozenset(p.lower() for p in query_params if p)
        self.headers = SECRET_HEADERS | {h.lower() for h in headers}
        # In free text a credential shows as ``name=value`` inside a URL, or ``Name: value`` in a quoted
        # request head (aiohttp's parser errors quote the raw bytes, escapes and all).
        alternatives = []
        if self.params:
            names = "|".join(re.escape(p) for p in sorted(self.params, key=len, reverse=True))
            alternatives.append(rf"(?:^|(?<=[?&;\s'\"]))(?:{names})=(?P<param>[^&#;\s'\"\\]+)")
        names = "|".join(re.escape(h) for h in sorted(self.headers, key=len, reverse=True))
        # No word boundary before the name: in a quoted head the line before ends in a literal ``\n``.
        alternatives.append(rf"(?:{names})\s*[:=]\s*(?P<header>[^\r\n'\"\\]+)")
        self._free = re.compile("|".join(alternatives), re.IGNORECASE)
        # Every match of ``_free`` holds one of these names; for ASCII text and names, in its lower case.
        named = (*self.params, *self.headers)
        self._names = tuple(sorted(named)) if all(n.isascii() for n in named) else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        return cls(settings.redact_body_patterns, settings.redact_query_params, settings.redact_headers)

    def __call__(self, data: bytes) -> bytes:
        return self.body(data)

    def text(self, value: str | None) -> str | None:
        """Free text with every credential masked: key-shaped values, query credentials, header lines."""
        if not value:
            return value
        masked = self.body.text(value) or ""
        # Both of ``_free``'s forms need an ``=`` or a ``:`` (no other character matches them in any case).
        if "=" not in masked and ":" not in masked:
            return masked
        if self._names is not None and masked.isascii():
            # ``_free`` has no literal to scan for and is tried at every position: most header values
            # hold none of its names, and ``in`` finds that out at C speed.
            lowered = masked.lower()
            if not any(name in lowered for name in self._names):
                return masked
        return self._free.sub(_redact_group, masked)

    def query(self, query: str) -> tuple[str, str | None]:
        """A raw query string with credential values redacted, and the first credential found (to fingerprint)."""
        if not query or not self.params:
            return query, None
        found: str | None = None
        parts = query.split("&")
        for i, part in enumerate(parts):
            name, eq, value = part.partition("=")
            if eq and unquote_plus(name).strip().lower() in self.params:
                if found is None and value and value != REDACTED:
                    found = unquote_plus(value)
                parts[i] = f"{name}={REDACTED}"
        return "&".join(parts), found

    def header_values(self, headers: dict[str, str]) -> dict[str, str]:
        """Headers (already redacted by name) with key-shaped values masked too."""
        if not headers:
            return headers
        values = list(headers.values())
        # One pass over all values: header values never hold a line feed.
        masked = (self.text("\n".join(values)) or "").split("\n")
        if len(masked) != len(values):  # a user pattern spanned a line end: mask one by one
            masked = [self.text(v) or "" for v in values]
        return dict(zip(headers, masked, strict=True))

    def exchange(self, ex: Exchange) -> None:
        """Mask, in place, every field of a record that came from a client or upstream (idempotent)."""
        run_through(self.exchange_steps(ex))

    def exchange_steps(self, ex: Exchange) -> Generator[None, None, None]:
        """``exchange`` a body window at a time, yielding between windows (``record.slices.complete``)."""
        steps = self.body.steps
        ex.request_body = yield from steps(ex.request_body)
        ex.response_body = yield from steps(ex.response_body)
        if ex.decoded_body is not None:
            ex.decoded_body = yield from steps(ex.decoded_body)
        if ex.assembled is not None:
            ex.assembled = yield from steps(ex.assembled)
        ex.query = self.query(ex.query)[0]
        ex.request_headers = self.header_values(ex.request_headers)
        ex.response_headers = self.header_values(ex.response_headers)
        text = self.text
        ex.error = text(ex.error)
        ex.user = text(ex.user)
        ex.session_id = text(ex.session_id)
        ex.requested_model = text(ex.requested_model)
        ex.returned_model = text(ex.returned_model)
        ex.path = text(ex.path) or ""


def _redact_group(match: re.Match[str]) -> str:
    name = "param" if match.group("param") is not None else "header"
    start, end = match.span(name)
    whole = match.group(0)
    return whole[: start - match.start()] + REDACTED + whole[end - match.start() :]


class LogScrubber(logging.Filter):
    """A logging filter that masks credentials in every record it sees: message, arguments, traceback.

    The proxy's own log calls never pass a credential; this is the net under third-party messages
    (aiohttp's, the database drivers') whose text the proxy does not control.
    """

    def __init__(self, redactor: Redactor, literals: Iterable[str] = ()) -> None:
        super().__init__()
        self.redactor = redactor
        # Secrets from the configuration, masked wherever they appear whatever their shape.
        self.literals = sorted({s for s in literals if len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = self._scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self._scrub(record.stack_info)
        return True

    def _scrub(self, text: str) -> str:
        text = self.redactor.text(text) or ""
        for secret in self.literals:
            text = text.replace(secret, REDACTED)
        return text


def configured_secrets(settings: Settings) -> list[str]:
    """Secrets the configuration itself holds: the fingerprint secret, the admin token, upstream keys."""
    values = [settings.fingerprint_secret, settings.admin_token]
    values += [up.api_key for up in settings.all_upstreams().values()]
    return [v for v in values if v]
