"""Durations as users type them: ``90s``, ``15m`` (or ``15min``), ``24h``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``"30d"`` -> 30 days. Raises ValueError naming the accepted forms."""
    match = DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d, 2w)")
    value, unit = match.groups()
    return timedelta(seconds=float(value) * _SECONDS[unit.lower()])
