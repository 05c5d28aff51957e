"""What configuration problems are called: checks of a built ``Settings`` and the one-line messages.

Invariants:
- Every message names the key as the user writes it (``upstream.connect_timeout``, ``upstreams.NAME.url``)
  and, when the value came from the environment, the variable (``PROXY_RECORDER_BATCH_SIZE='many'``).
- A bad enum value lists the valid ones; a ``PROXY_`` variable that is no setting is a warning naming the
  closest real one, never silently ignored.
- Checks read a ``Settings`` they are handed; only ``proxy.config`` reads the environment.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from proxy.durations import parse_duration

if TYPE_CHECKING:
    from proxy.config import Price, Replay, Settings

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# PROXY_ variables that are not settings: the config file's path, and the test suite's own.
NOT_SETTINGS = frozenset({"PROXY_CONFIG", "PROXY_FAULT_REPORT"})
NOT_SETTINGS_PREFIXES = ("PROXY_TEST_",)


class ConfigError(Exception):
    """A configuration problem, described in one line that names the key or value."""


def env_var(path: Iterable[str]) -> str:
    """The environment variable of a settings key: ``("database", "url")`` -> ``PROXY_DATABASE_URL``."""
    return "PROXY_" + "_".join(path).upper()


def unknown_env_warnings(env: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """One warning per ``PROXY_`` variable that is no setting, naming the closest real one."""
    known = sorted(known)
    warnings = []
    for name in sorted(env):
        if not name.startswith("PROXY_") or name in known or name in NOT_SETTINGS:
            continue
        if name.startswith(NOT_SETTINGS_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f" (settings: {', '.join(known)})"
        warnings.append(f"proxy: warning: {name} is not a setting and is ignored{hint}")
    return warnings


def friendly(message: str, from_env: Mapping[str, str], enums: Mapping[str, type[enum.Enum]]) -> str:
    """msgspec's "... - at `$.a.b`" as "a.b: ...", with the variable a value came from and valid enum values.

    ``from_env``: dotted key -> variable name, for values taken from the environment; ``enums``: dotted
    key -> its enum type.
    """
    text, sep, where = message.partition(" - at `$.")
    if not sep:
        return message
    key = where.rstrip("`").replace("[", ".").replace("]", "")
    enum_type = enums.get(key)
    if enum_type is not None and text.startswith("Invalid enum value"):
        text += f" (valid: {', '.join(str(m.value) for m in enum_type)})"
    var = from_env.get(key)
    return f"{key}: {text}" + (f" (from {var})" if var else "")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"listen: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_url(key: str, url: str, *, required: bool) -> None:
    if not url:
        if required:
            how = " (--upstream URL, PROXY_UPSTREAM_URL or [upstream] url; --demo serves a built-in demo upstream)"
            raise ConfigError(f"{key}: an upstream URL is required{how if key == 'upstream.url' else ''}")
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: not an http(s) URL: {url!r}")


# An upstream base URL that ends in one of these is an endpoint pasted whole: the proxy appends it again.
_ENDPOINTS = ("/chat/completions", "/completions", "/embeddings", "/responses", "/messages", "/models")


def upstream_url_warning(key: str, url: str) -> str | None:
    """Why an upstream URL's path looks wrong for an OpenAI-compatible API, or None.

    The proxy sends ``/v1/chat/completions`` to the upstream base URL plus ``/chat/completions``, so the base
    URL is the API's root: ``https://api.openai.com/v1``, ``https://openrouter.ai/api/v1``.
    """
    if not url:
        return None
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path:
        root = url.rstrip("/")
        return (
            f"{key} {url} has no path: /v1/chat/completions goes to {root}/chat/completions; "
            f"OpenAI-compatible APIs are usually under /v1 ({root}/v1)"
        )
    for endpoint in _ENDPOINTS:
        if path.endswith(endpoint):
            base = parts._replace(path=path[: -len(endpoint)], query="", fragment="").geturl()
            return f"{key} {url} names an endpoint: give the API's base URL ({base}); the proxy appends {endpoint}"
    if not any(re.fullmatch(r"v\d+[a-z0-9]*", segment) for segment in path.split("/")):
        return (
            f"{key} {url} has no version segment such as /v1: /v1/chat/completions goes to "
            f"{url.rstrip('/')}/chat/completions; OpenAI-compatible APIs are usually under .../v1"
        )
    return None


def validate(settings: Settings, *, require_upstream: bool) -> None:
    """Every check of a built Settings that its types alone cannot express."""
    parse_listen(settings.listen)
    # Replay answers from recordings alone: it needs no upstream.
    check_url("upstream.url", settings.upstream.url, required=require_upstream and settings.mode.forwards)
    for name, up in settings.upstreams.items():
        if not re.match(NAME_PATTERN, name) or name in ("v1", "s", "_proxy", "default"):
            raise ConfigError(f"upstreams.{name}: invalid upstream name (letters, digits, _.-; not v1/s/_proxy)")
        check_url(f"upstreams.{name}.url", up.url, required=True)
    sections = {"upstream": settings.upstream, **{f"upstreams.{n}": up for n, up in settings.upstreams.items()}}
    for key, up in sections.items():
        for field in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(up, field) < 0:
                raise ConfigError(f"{key}.{field}: must be >= 0, got {getattr(up, field)}")
    url = settings.database.url
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            f"database.url: unsupported {url!r} (use sqlite+aiosqlite:///FILE or postgresql+asyncpg://...)"
        )
    if settings.max_body_bytes <= 0:
        raise ConfigError("max_body_bytes: must be > 0")
    if settings.max_record_bytes <= 0:
        raise ConfigError("max_record_bytes: must be > 0")
    if settings.workers < 1:
        raise ConfigError("workers: must be >= 1")
    if settings.workers > 1 and settings.host_port[1] == 0:
        raise ConfigError("workers: several workers need a fixed port in `listen`, not port 0")
    if settings.recorder.batch_size <= 0 or settings.recorder.queue_size <= 0:
        raise ConfigError("recorder: batch_size and queue_size must be > 0")
    for key in ("max_age", "bodies_max_age", "interval"):
        value = getattr(settings.retention, key)
        if value:
            try:
                parse_duration(value)
            except ValueError as exc:
                raise ConfigError(f"retention.{key}: {exc}") from None
    for pattern in settings.redact_body_patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"redact_body_patterns: bad regex {pattern!r}: {exc}") from None
    for name in settings.redact_query_params:
        if not name or any(c in name for c in "&=#? "):
            raise ConfigError(f"redact_query_params: not a query parameter name: {name!r}")
    for name in ("header_timeout", "body_timeout"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{name}: must be >= 0 seconds (0 = no limit)")
    _validate_replay(settings.replay)
    for model, entries in settings.pricing.items():
        check_prices(f"pricing.{model}", entries)
    if not 0 <= settings.recorder.batch_delay <= 10:
        raise ConfigError("recorder.batch_delay: must be between 0 and 10 seconds")
    if not re.match(r"^[A-Za-z0-9-]+$", settings.session_header):
        raise ConfigError(f"session_header: not a header name: {settings.session_header!r}")


def _validate_replay(replay: Replay) -> None:
    if not replay.speed > 0:
        raise ConfigError("replay.speed: must be > 0")
    if replay.closest < 0:
        raise ConfigError("replay.closest: must be >= 0")
    for item in replay.ignore:
        if not item or (not item.startswith("/") and "/" in item):
            raise ConfigError(f"replay.ignore: {item!r} is neither a field name nor a JSON Pointer (/a/b)")


def check_prices(key: str, entries: Price | list[Price]) -> None:
    """Prices are non-negative and at most one entry starts on each date."""
    seen: set[Any] = set()
    for price in entries if isinstance(entries, list) else [entries]:
        for field in ("input", "output", "cached_input", "reasoning", "cache_write", "cache_write_1h"):
            value = getattr(price, field)
            if value is not None and value < 0:
                raise ConfigError(f"{key}.{field}: must be >= 0")
        if price.effective_from in seen:
            raise ConfigError(f"{key}: two entries with effective_from {price.effective_from}")
        seen.add(price.effective_from)
