"""Settings: built-in defaults < TOML file < environment < command-line flags.

Invariants:
- This is the only module that reads ``os.environ``; everything else receives a ``Settings``.
- Every TOML key has an environment variable named ``PROXY_`` + its dotted path in upper case with dots
  as underscores (``database.url`` -> ``PROXY_DATABASE_URL``); named upstreams are TOML-only.
- A bad value raises ``ConfigError`` with one line naming the key; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from proxy.durations import parse_duration

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///proxy.db"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Secrets masked inside stored bodies unless `redact_body_patterns` says otherwise (see record.redact).
DEFAULT_BODY_PATTERNS = (
    # OpenAI (sk-, sk-proj-), OpenRouter (sk-or-v1-), Anthropic (sk-ant-) and look-alikes, not preceded by
    # a letter or digit (the lookbehind comes after the literal, so the search scans for "sk-").
    r"sk-(?<![A-Za-z0-9]sk-)[A-Za-z0-9_\-]{16,}",
    # A bearer credential echoed inside a body (the space leads, for speed; only the group is masked).
    r" (?<=(?i:bearer) )([A-Za-z0-9_\-.=]{16,})",
)
# Query parameters that carry credentials (Gemini-style `?key=`, signed URLs...): redacted wherever a URL
# is stored, logged or echoed, and fingerprinted like an Authorization header; the upstream gets them as sent.
DEFAULT_QUERY_PARAMS = ("key", "api_key", "api-key", "token", "access_token", "sig")


class ConfigError(Exception):
    """A configuration problem, described in one line that names the key or value."""


class Mode(enum.StrEnum):
    """What the proxy does with a request. The properties below are the whole mode policy: every part of
    the proxy asks them, none compares modes itself."""

    RECORD = "record"  # forward upstream and record the exchange
    REPLAY = "replay"  # answer only from recordings; never contact an upstream
    AUTO = "auto"  # answer from a matching recording, else forward and record
    PASSTHROUGH = "passthrough"  # forward upstream, record nothing

    @property
    def forwards(self) -> bool:
        """Requests may go upstream (every mode but replay)."""
        return self is not Mode.REPLAY

    @property
    def replays(self) -> bool:
        """Recordings are asked first (replay and auto)."""
        return self in (Mode.REPLAY, Mode.AUTO)

    @property
    def records(self) -> bool:
        """Forwarded exchanges are recorded (record and auto); an answer from recordings never is."""
        return self in (Mode.RECORD, Mode.AUTO)


# --- replay (issue 3) ---
class Exhausted(enum.StrEnum):
    """What a replay does when a request key's recordings are used up."""

    ERROR = "error"  # a replay miss (in auto mode: forward and record the new request)
    REPEAT_LAST = "repeat-last"  # keep answering with the last recording
    CYCLE = "cycle"  # start again from the first recording


class Timing(enum.StrEnum):
    """How fast a recorded response is played back."""

    ORIGINAL = "original"  # the recorded gaps between network reads, divided by `speed`
    INSTANT = "instant"  # everything at once


class Replay(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Sessions to answer from; empty: the request's own session if it names one, else every recording.
    sessions: list[str] = []
    # Extra request fields left out of the match key: top-level names ("temperature") or JSON Pointers
    # ("/messages/0/content"; `*` matches any array index or object key).
    ignore: list[str] = []
    on_exhausted: Exhausted = Exhausted.ERROR
    timing: Timing = Timing.ORIGINAL
    # Playback speed factor for `original` timing (10 = ten times faster).
    speed: float = 1.0
    # Also replay recordings that did not complete (client left, upstream cut or timed out).
    include_partial: bool = False
    # How many closest recorded requests a replay miss names.
    closest: int = 3


# --- end replay ---


class Upstream(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = ""
    # Sent as `Authorization: Bearer ...` only when the client sent no credentials of its own.
    api_key: str | None = None
    connect_timeout: float = 10.0
    # Idle timeout between two reads of the upstream response; streams may last longer than this in total.
    read_timeout: float = 300.0
    # Whole-request cap in seconds; 0 means none (long streams are normal).
    total_timeout: float = 0.0
    # Concurrent upstream connections; every open stream holds one. 0 = unlimited.
    max_connections: int = 0


class Database(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = DEFAULT_DATABASE_URL
    # Apply Alembic migrations at `proxy serve` start-up.
    auto_migrate: bool = True
    # Seconds to wait for a connection; a database that does not answer is then treated as down.
    connect_timeout: float = 5.0
    # Seconds one statement may take (PostgreSQL); past it the batch goes to the spool.
    command_timeout: float = 30.0


class Recorder(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Exchanges waiting for the writer; when full, new records go to the disk spool.
    queue_size: int = 10_000
    # Batches form by themselves: the writer takes whatever is queued, up to this many, per transaction.
    batch_size: int = 500
    # Seconds the writer waits after the first record of a batch for more to join it (0 = write at once).
    # A transaction costs much more than a row, so this is what keeps recording cheap at low concurrency.
    batch_delay: float = 0.05
    # Where records wait while the database is unavailable.
    spool_dir: str = "proxy-spool"
    spool_max_bytes: int = 1 << 30
    # Seconds between attempts to reach a database that failed.
    retry_interval: float = 2.0
    # Keep request/response bodies (usage columns are always kept).
    store_bodies: bool = True


class Retention(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Delete whole exchanges older than this (e.g. "90d"); "" keeps them forever.
    max_age: str = ""
    # Delete only the bodies of exchanges older than this (usage rows stay); "" keeps them.
    bodies_max_age: str = ""
    # How often the running proxy applies the two rules above.
    interval: str = "1h"


class Price(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One price entry, in USD per million tokens (`[pricing."MODEL"]`, or `[[pricing."MODEL"]]` for history)."""

    input: float
    output: float = 0.0
    # Prompt tokens served from the provider's cache; absent = the input price.
    cached_input: float | None = None
    # Reasoning tokens (part of completion tokens); absent = the output price.
    reasoning: float | None = None
    # Prompt tokens written to the provider's cache (Anthropic: 1.25x input for the 5-minute lifetime);
    # absent = the input price.
    cache_write: float | None = None
    # The same for a 1-hour cache lifetime (Anthropic: 2x input); absent = the cache_write price.
    cache_write_1h: float | None = None
    # First UTC day this price applies; absent = always. Later entries win from their date on.
    effective_from: datetime.date | None = None


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    mode: Mode = Mode.RECORD
    upstream: Upstream = msgspec.field(default_factory=Upstream)
    upstreams: dict[str, Upstream] = {}
    database: Database = msgspec.field(default_factory=Database)
    recorder: Recorder = msgspec.field(default_factory=Recorder)
    retention: Retention = msgspec.field(default_factory=Retention)
    replay: Replay = msgspec.field(default_factory=Replay)
    # Largest request body accepted; bigger ones get 413 before the rest is read.
    max_body_bytes: int = 64 << 20
    # Header that names the recording session (a `/s/{session}/v1/...` prefix works too).
    session_header: str = "X-Proxy-Session"
    # Ask the upstream for the usage chunk on every stream and hide it from clients that did not ask.
    inject_stream_usage: bool = True
    # Largest SSE event the usage-chunk filter holds back; past it the stream passes through untouched.
    max_event_bytes: int = 16 << 20
    # What a record keeps of a response body: its head, up to this many bytes (the record says how many
    # passed); usage, outcome and the assembled response still come from the whole stream.
    max_record_bytes: int = 32 << 20
    # Extra request/response header names to redact before storage (auth and cookies always are).
    redact_headers: list[str] = []
    # Regexes for secrets inside bodies, masked (same length) before storage; [] disables.
    redact_body_patterns: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_BODY_PATTERNS))
    # Query parameter names (case-insensitive) whose values are credentials; see DEFAULT_QUERY_PARAMS.
    redact_query_params: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_QUERY_PARAMS))
    # Secret for API-key fingerprints; empty = a random one generated once and kept in the database.
    fingerprint_secret: str = ""
    # Bearer token for /_proxy/ admin routes; required when listening on a non-loopback address.
    admin_token: str = ""
    access_log: bool = False
    log_level: str = "INFO"
    # Prices per model, overriding the bundled table model by model (TOML only).
    pricing: dict[str, Price | list[Price]] = {}
    # Extra model names priced as another model, e.g. {"my-deployment" = "gpt-4o"} (TOML only).
    model_aliases: dict[str, str] = {}
    # Start from the bundled price table (proxy/prices.toml); false = only [pricing] entries.
    bundled_prices: bool = True
    # Worker processes serving one port (SO_REUSEPORT), all writing to the same database.
    workers: int = 1

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    def all_upstreams(self) -> dict[str, Upstream]:
        """The default upstream (named `default`, mounted at `/v1`) and the named ones."""
        return {"default": self.upstream, **self.upstreams}

    @property
    def listens_on_loopback(self) -> bool:
        host = self.host_port[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a host name may resolve to anything


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"listen: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _check_url(key: str, url: str, *, required: bool) -> None:
    if not url:
        if required:
            how = " (--upstream URL, PROXY_UPSTREAM_URL or [upstream] url; --demo serves a built-in demo upstream)"
            raise ConfigError(f"{key}: an upstream URL is required{how if key == 'upstream.url' else ''}")
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: not an http(s) URL: {url!r}")


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Map PROXY_* variables onto the settings tree (scalar keys only)."""
    out: dict[str, Any] = {}
    paths: list[tuple[str, ...]] = []
    for name in Settings.__struct_fields__:
        if name in _TOML_ONLY:
            continue
        sub = _SECTIONS.get(name)
        if sub is None:
            paths.append((name,))
        else:
            paths.extend((name, f) for f in sub.__struct_fields__)
    for path in paths:
        var = "PROXY_" + "_".join(path).upper()
        if var in env:
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = _env_value(env[var])
    return out


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "upstream": Upstream,
    "database": Database,
    "recorder": Recorder,
    "retention": Retention,
    "replay": Replay,
}
# Tables keyed by user-chosen names: no environment variable maps onto them.
_TOML_ONLY = frozenset({"upstreams", "pricing", "model_aliases"})


def _env_value(raw: str) -> Any:
    # Environment values are strings; msgspec.convert(strict=False) turns "10" into 10 and "true" into True.
    if raw.startswith("[") and raw.endswith("]"):
        return [item.strip() for item in raw[1:-1].split(",") if item.strip()]
    return raw


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = _merge(dict(base[key]), value)
        else:
            base[key] = value
    return base


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get("PROXY_CONFIG"):
        return Path(env["PROXY_CONFIG"])
    local = Path("proxy.toml")
    return local if local.is_file() else None


def load_settings(
    config_path: str | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    require_upstream: bool = False,
) -> Settings:
    """Build Settings from every source; ``flags`` uses the TOML tree shape (``{"upstream": {"url": ..}}``)."""
    env = os.environ if env is None else env
    tree: dict[str, Any] = {}
    path = find_config_file(config_path, env)
    if path is not None:
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config: file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    _merge(tree, _env_overrides(env))
    _merge(tree, flags or {})
    return settings_from_tree(tree, require_upstream=require_upstream)


def settings_from_tree(tree: Mapping[str, Any], *, require_upstream: bool = False) -> Settings:
    """Settings from one tree in the TOML shape alone (no file, no environment), validated."""
    try:
        settings = msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config: {_friendly(str(exc))}") from None
    validate(settings, require_upstream=require_upstream)
    return settings


def _friendly(message: str) -> str:
    # msgspec says "... - at `$.upstream.url`"; users write TOML keys, so show the dotted key.
    text, sep, where = message.partition(" - at `$.")
    if sep:
        return f"{where.rstrip('`').replace('[', '.').replace(']', '')}: {text}"
    return message


def validate(settings: Settings, *, require_upstream: bool) -> None:
    import re

    parse_listen(settings.listen)
    # Replay answers from recordings alone: it needs no upstream.
    _check_url("upstream.url", settings.upstream.url, required=require_upstream and settings.mode.forwards)
    for name, up in settings.upstreams.items():
        if not re.match(NAME_PATTERN, name) or name in ("v1", "s", "_proxy", "default"):
            raise ConfigError(f"upstreams.{name}: invalid upstream name (letters, digits, _.-; not v1/s/_proxy)")
        _check_url(f"upstreams.{name}.url", up.url, required=True)
    for key, up in settings.all_upstreams().items():
        for field in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(up, field) < 0:
                raise ConfigError(f"{key}.{field}: must be >= 0")
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


def secret_from_env(var: str, env: Mapping[str, str] | None = None) -> str:
    """A credential named by the user (``--api-key-env VAR``); read here, the only reader of os.environ."""
    value = (os.environ if env is None else env).get(var)
    if not value:
        raise ConfigError(f"{var}: environment variable is not set")
    return value


def check_prices(key: str, entries: Price | list[Price]) -> None:
    """Prices are non-negative and at most one entry starts on each date."""
    seen: set[datetime.date | None] = set()
    for price in entries if isinstance(entries, list) else [entries]:
        for field in ("input", "output", "cached_input", "reasoning", "cache_write", "cache_write_1h"):
            value = getattr(price, field)
            if value is not None and value < 0:
                raise ConfigError(f"{key}.{field}: must be >= 0")
        if price.effective_from in seen:
            raise ConfigError(f"{key}: two entries with effective_from {price.effective_from}")
        seen.add(price.effective_from)
