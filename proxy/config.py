"""Settings: built-in defaults < TOML file < environment < command-line flags.

Invariants:
- This is the only module that reads ``os.environ``; everything else receives a ``Settings``.
- Every TOML key has an environment variable named ``PROXY_`` + its dotted path in upper case with dots
  as underscores (``database.url`` -> ``PROXY_DATABASE_URL``); named upstreams are TOML-only.
- A bad value raises ``ConfigError`` with one line naming the key (and the variable, when the value came
  from the environment); the checks and their messages live in ``proxy.config_text``. The CLI turns it
  into exit code 2.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import logging
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from proxy.config_text import (
    NAME_PATTERN,
    ConfigError,
    check_prices,
    env_var,
    friendly,
    parse_listen,
    unknown_env_warnings,
    validate,
)

__all__ = ["NAME_PATTERN", "ConfigError", "check_prices", "parse_listen"]
log = logging.getLogger("proxy.config")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///proxy.db"
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


class Server(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Copy streamed response bodies to the client inside the callbacks that receive them (forward.relay),
    # below aiohttp's stream API; false = through aiohttp's StreamReader and StreamResponse (forward.tee).
    relay: bool = True


class Database(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = DEFAULT_DATABASE_URL
    # Apply Alembic migrations at `proxy serve` start-up.
    auto_migrate: bool = True
    # Seconds to wait for a connection; a database that does not answer is then treated as down.
    connect_timeout: float = 5.0
    # Seconds one statement may take (PostgreSQL); past it the batch goes to the spool.
    command_timeout: float = 30.0


class WriterMode(enum.StrEnum):
    """Where the recorder's writer (decoding, pricing, masking, inserting) runs."""

    # A child process fed over a socket pair: recording takes nothing from the serving process's GIL,
    # and a record handed over survives a kill -9 of the serving process.
    PROCESS = "process"
    # A thread with its own event loop in the serving process: no child to start, shares the GIL.
    THREAD = "thread"
    # A task on the serving loop itself (an in-memory SQLite database, and the writer process's own).
    LOOP = "loop"


class Recorder(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Where the writer runs: "process" (default), "thread", "loop" (see WriterMode).
    writer: WriterMode = WriterMode.PROCESS
    # Exchanges waiting for the writer, and the bytes they may hold (bodies, headers: an estimate);
    # past either bound new records go to the disk spool, written back when the writer catches up.
    queue_size: int = 10_000
    queue_max_bytes: int = 256 << 20
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
    server: Server = msgspec.field(default_factory=Server)
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
    # Seconds a client may take to send a request line and headers (a slowloris guard); 0 = no limit.
    header_timeout: float = 10.0
    # Seconds a client may take to send a request body once its headers are in; 0 = no limit.
    body_timeout: float = 120.0
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


def _env_paths() -> list[tuple[str, ...]]:
    """Every settings key an environment variable maps onto (scalar keys only)."""
    paths: list[tuple[str, ...]] = []
    for name in Settings.__struct_fields__:
        if name in _TOML_ONLY:
            continue
        sub = _SECTIONS.get(name)
        if sub is None:
            paths.append((name,))
        else:
            paths.extend((name, f) for f in sub.__struct_fields__)
    return paths


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """PROXY_* variables on the settings tree, and which dotted key came from which variable."""
    out: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path in _env_paths():
        var = env_var(path)
        if var in env:
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = _env_value(env[var])
            sources[".".join(path)] = var
    return out, sources


def _enum_keys() -> dict[str, type[enum.Enum]]:
    """Dotted key -> enum type, for every enum-valued setting (their valid values go into messages)."""
    out: dict[str, type[enum.Enum]] = {}
    for path in _env_paths():
        owner: Any = _SECTIONS[path[0]] if len(path) == 2 else Settings
        hint = typing.get_type_hints(owner).get(path[-1])
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            out[".".join(path)] = hint
    return out


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "upstream": Upstream,
    "server": Server,
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
    overrides, sources = _env_overrides(env)
    for warning in unknown_env_warnings(env, (env_var(p) for p in _env_paths())):
        log.warning(warning)
    _merge(tree, overrides)
    flags = flags or {}
    _merge(tree, flags)
    from_env = {key: var for key, var in sources.items() if not _given(flags, key)}
    return settings_from_tree(tree, require_upstream=require_upstream, from_env=from_env)


def _given(tree: Mapping[str, Any], dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def settings_from_tree(
    tree: Mapping[str, Any], *, require_upstream: bool = False, from_env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from one tree in the TOML shape, validated; ``from_env`` names the variables values came from."""
    try:
        settings = msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(friendly(str(exc), from_env or {}, _enum_keys())) from None
    validate(settings, require_upstream=require_upstream)
    return settings


def secret_from_env(var: str, env: Mapping[str, str] | None = None) -> str:
    """A credential named by the user (``--api-key-env VAR``); read here, the only reader of os.environ."""
    value = (os.environ if env is None else env).get(var)
    if not value:
        raise ConfigError(f"{var}: environment variable is not set")
    return value
