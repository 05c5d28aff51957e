"""Durations and points in time as users type them: ``90s``, ``15m``, ``24h``, ``7d``, ``2w``, ISO dates."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``"30d"`` -> 30 days. Raises ValueError with the accepted forms."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d, 2w)")
    value, unit = match.groups()
    return timedelta(**{_UNITS[unit.lower()]: float(value)})


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """A relative age (``24h`` = 24 hours ago) or an ISO date/time (naive means UTC)."""
    now = now or datetime.now(UTC)
    if _DURATION.match(text):
        return now - parse_duration(text)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use an ISO date like 2026-11-01 or an age like 24h, 7d)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
