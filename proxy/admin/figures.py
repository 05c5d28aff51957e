"""How numbers leave the proxy for people and programs: costs exact, durations to 0.01 ms.

Invariants:
- A cost in JSON is a number with exactly ``COST_PLACES`` decimal places (``0.0000051000``), the stored
  float rounded once: no float noise (``5.0999999999999995e-06``), no scientific notation. CSV shows the
  same digits; tables show a few significant digits (``0.00000002``, never ``0``).
- A duration (a key ending in ``_ms``) is rounded to 0.01 ms everywhere.
- Which numbers are costs or durations is decided by their key (``cost_usd``, ``usd``, ``*_ms``), and a
  key's kind holds for everything under it (``"cost_usd": {"original": .., "new": ..}``).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import msgspec

COST_PLACES = 10
_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
DURATION_PLACES = 2
COST_KEYS = frozenset({"cost_usd", "usd", "cost"})


def kind_of(key: str) -> str | None:
    if key in COST_KEYS or key.endswith("_cost_usd"):
        return "cost"
    if key.endswith("_ms"):
        return "duration"
    return None


def cost_text(value: float) -> str:
    """``5.0999999999999995e-06`` -> ``0.0000051000``: the float rounded once to ``COST_PLACES`` places."""
    return format(Decimal(value).quantize(_QUANTUM), "f")


def readable(value: Any, kind: str | None = None) -> Any:
    """``value`` ready for JSON: every cost a fixed-point number (``msgspec.Raw``), every duration rounded."""
    if isinstance(value, dict):
        return {k: readable(v, (kind_of(k) if isinstance(k, str) else None) or kind) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [readable(v, kind) for v in value]
    if isinstance(value, float) and kind is not None and math.isfinite(value):
        return msgspec.Raw(cost_text(value).encode()) if kind == "cost" else round(value, DURATION_PLACES)
    return value


def csv_number(key: str, value: Any) -> Any:
    """A CSV cell's number: a cost with its fixed decimal places, a rounded duration, else as given."""
    kind = kind_of(key)
    if isinstance(value, float) and kind is not None and math.isfinite(value):
        return cost_text(value) if kind == "cost" else round(value, DURATION_PLACES)
    return value


def table_number(key: str, value: float) -> str:
    """A table cell: durations to 0.01 ms, costs and other fractions with four significant digits."""
    if kind_of(key) == "duration" or abs(value) >= 1:
        return f"{value:,.2f}"
    if value == 0:
        return "0"
    places = max(2, 3 - math.floor(math.log10(abs(value))))
    return f"{value:.{places}f}".rstrip("0").rstrip(".")
