"""Cost of an exchange: the provider's own figure when it sends one, else tokens x a price entry.

Invariants:
- A provider-reported cost (OpenRouter's ``usage.cost``) always wins and is never recomputed.
- Unknown is NULL, never 0: usage without a price, or a possibly billed exchange without usage, gets
  ``cost_usd = None`` and ``CostSource.UNKNOWN``; reports count those rows separately. An exchange that
  reported no usage and never got a 2xx from the upstream (rejected, unreachable, 4xx/5xx) is
  ``CostSource.NONE``, also with a NULL cost.
- Cached prompt tokens (cache reads and cache writes) are part of ``prompt_tokens`` and reasoning tokens
  part of ``completion_tokens`` (OpenAI's convention; the API families map other conventions onto it):
  each token is priced exactly once, at the cache-read, cache-write or reasoning rate when that rate
  exists.
- Pure: the table is built from Settings once; pricing runs in the recorder's writer and in
  ``proxy usage --recompute-cost``, never on the request path.

Model name resolution (the README documents it): names are compared lower-cased; the reported model is
tried before the requested one; for each, in order: the name itself, a configured alias, the name
without a date suffix (``-2024-08-06``, ``-20241022``, ``-0613``), then the part after the last ``/``
(``openai/gpt-4o`` -> ``gpt-4o``) and that without its date suffix. The first name with an entry wins;
failing all, a name matching the part after ``/`` of exactly one entry (``claude-sonnet-4`` ->
``anthropic/claude-sonnet-4``) does.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec

from proxy.config import Price, Settings, check_prices
from proxy.record.exchange import CostSource, Exchange, Usage

BUNDLED_PRICES = Path(__file__).with_name("prices.toml")
PER_TOKEN = 1e-6  # prices are per million tokens
# Reading or deleting (model lists, files, batches) is never billed: with no usage, such a call costs
# nothing rather than an unknown amount.
UNBILLED_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def billable(method: str) -> bool:
    return method.upper() not in UNBILLED_METHODS
DATE_SUFFIX = re.compile(r"-(?:20\d\d-\d\d-\d\d|20\d{6}|(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))$")


@dataclass(frozen=True)
class Cost:
    usd: float | None
    source: CostSource
    ref: str | None = None


@dataclass(frozen=True)
class Entry:
    ref: str
    price: Price


def _as_list(entries: Price | list[Price]) -> list[Price]:
    return entries if isinstance(entries, list) else [entries]


def load_bundled() -> dict[str, Price | list[Price]]:
    tree = tomllib.loads(BUNDLED_PRICES.read_text(encoding="utf-8"))
    return msgspec.convert(tree.get("pricing", {}), dict[str, Price | list[Price]], strict=False)


def token_cost(price: Price, usage: Usage) -> float:
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens or 0
    cached = min(usage.cached_tokens or 0, prompt)
    written = min(usage.cache_write_tokens or 0, prompt - cached)
    written_1h = min(usage.cache_write_1h_tokens or 0, written)
    reasoning = min(usage.reasoning_tokens or 0, completion)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    write_rate = price.input if price.cache_write is None else price.cache_write
    write_1h_rate = write_rate if price.cache_write_1h is None else price.cache_write_1h
    reasoning_rate = price.output if price.reasoning is None else price.reasoning
    total = (
        (prompt - cached - written) * price.input
        + cached * cached_rate
        + (written - written_1h) * write_rate
        + written_1h * write_1h_rate
        + (completion - reasoning) * price.output
        + reasoning * reasoning_rate
    )
    return total * PER_TOKEN


def candidate_names(name: str, aliases: Mapping[str, str]) -> list[str]:
    """The names tried for one model name, in order (see the module docstring)."""
    out: list[str] = []

    def add(candidate: str | None) -> None:
        if candidate and candidate not in out:
            out.append(candidate)

    base = name.strip().lower()
    for n in (base, aliases.get(base)):
        if n:
            tail = n.rsplit("/", 1)[-1]
            for candidate in (n, DATE_SUFFIX.sub("", n), tail, DATE_SUFFIX.sub("", tail)):
                add(candidate)
                add(aliases.get(candidate))
    return out


class PriceTable:
    """Price entries per lower-cased model name, each list sorted by ``effective_from``."""

    def __init__(
        self,
        configured: Mapping[str, Price | list[Price]] | None = None,
        *,
        aliases: Mapping[str, str] | None = None,
        bundled: bool = True,
    ) -> None:
        self._entries: dict[str, list[Entry]] = {}
        if bundled:
            self._add(load_bundled(), "bundled")
        self._add(configured or {}, "config")  # a configured model replaces the bundled entries whole
        # `claude-sonnet-4` finds `anthropic/claude-sonnet-4` when only one prefixed key ends that way.
        tails: dict[str, list[str]] = {}
        for key in self._entries:
            if "/" in key:
                tails.setdefault(key.rsplit("/", 1)[-1], []).append(key)
        self._tails = {tail: keys[0] for tail, keys in tails.items() if len(keys) == 1}
        self.aliases = {k.strip().lower(): v.strip().lower() for k, v in (aliases or {}).items()}
        # The writer prices every exchange, nearly always for the same few names: resolve each once.
        self._resolved: dict[str, str | None] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        return cls(settings.pricing, aliases=settings.model_aliases, bundled=settings.bundled_prices)

    def _add(self, table: Mapping[str, Price | list[Price]], origin: str) -> None:
        for model, raw in table.items():
            check_prices(f"pricing.{model}", raw)
            key = model.strip().lower()
            entries = sorted(_as_list(raw), key=lambda p: p.effective_from or date.min)
            self._entries[key] = [
                Entry(f"{origin}:{key}" + (f"@{p.effective_from}" if p.effective_from else ""), p) for p in entries
            ]

    def __contains__(self, model: str) -> bool:
        return model.strip().lower() in self._entries

    def lookup(self, names: Iterable[str | None], at: datetime) -> Entry | None:
        """The entry for the first name that resolves, in force on ``at``'s UTC day."""
        day = (at if at.tzinfo is None else at.astimezone(UTC)).date()
        for name in names:
            if not name:
                continue
            key = self._resolve(name)
            if key is not None:
                entries = self._entries[key]
                in_force = [e for e in entries if e.price.effective_from is None or e.price.effective_from <= day]
                return in_force[-1] if in_force else None  # the model is known, but not priced yet on that day
        return None

    def _resolve(self, name: str) -> str | None:
        try:
            return self._resolved[name]
        except KeyError:
            pass
        candidates = candidate_names(name, self.aliases)
        keys = [c for c in candidates if c in self._entries] or [self._tails[c] for c in candidates if c in self._tails]
        if len(self._resolved) < 10_000:  # names come from clients and upstreams: bound the memo
            self._resolved[name] = keys[0] if keys else None
        return keys[0] if keys else None

    def cost(
        self,
        names: Iterable[str | None],
        at: datetime,
        usage: Usage,
        *,
        provider_cost: float | None = None,
        upstream_ok: bool = True,
        billed: bool = True,
    ) -> Cost:
        """``billed``: the call is of a kind providers charge for (``billable``); ``upstream_ok``: it got a 2xx."""
        if provider_cost is not None:
            return Cost(provider_cost, CostSource.PROVIDER, "provider")
        if usage.prompt_tokens is None and usage.completion_tokens is None:
            return Cost(None, CostSource.UNKNOWN if upstream_ok and billed else CostSource.NONE)
        entry = self.lookup(names, at)
        if entry is None:
            return Cost(None, CostSource.UNKNOWN)
        return Cost(token_cost(entry.price, usage), CostSource.COMPUTED, entry.ref)

    def apply(self, ex: Exchange) -> None:
        """Set the exchange's cost fields (after ``decode.finalize`` filled its usage)."""
        ok = ex.upstream_status is not None and 200 <= ex.upstream_status < 300
        cost = self.cost(
            (ex.returned_model, ex.requested_model),
            ex.started_at,
            ex.usage,
            provider_cost=ex.provider_cost,
            upstream_ok=ok,
            billed=billable(ex.method),
        )
        ex.cost_usd, ex.cost_source, ex.price_ref = cost.usd, cost.source, cost.ref
