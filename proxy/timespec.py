"""Time arguments for reports: ISO dates and times, or ages relative to now (``90m``, ``24h``, ``7d``, ``2w``).

Invariants:
- Every result is an aware UTC datetime; a date or a time without an offset is read as UTC.
- ``parse_time`` raises ``ValueError`` with a message fit to show a user (the CLI and the admin API do).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
HELP = "an ISO date or time (2026-11-01, 2026-11-01T12:00Z) or an age: 30m, 24h, 7d, 2w"


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """``24h`` means 24 hours before ``now``; ``2026-11-01`` means its midnight UTC."""
    text = value.strip()
    match = RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * UNITS[match.group(2).lower()]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot read time {value!r}: expected {HELP}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
