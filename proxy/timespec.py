"""Time arguments for reports: ISO dates and times, or ages relative to now (``90m``, ``24h``, ``7d``, ``2w``).

Invariants:
- Every result is an aware UTC datetime; a date or a time without an offset is read as UTC.
- ``parse_time`` raises ``ValueError`` with a message fit to show a user (the CLI and the admin API do).
"""

from __future__ import annotations

from datetime import UTC, datetime

from proxy.durations import DURATION, parse_duration

HELP = "an ISO date or time (2026-11-01, 2026-11-01T12:00Z) or an age: 30m, 24h, 7d, 2w"


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """``24h`` means 24 hours before ``now``; ``2026-11-01`` means its midnight UTC."""
    text = value.strip()
    if DURATION.match(text):
        return (now or datetime.now(UTC)) - parse_duration(text)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot read time {value!r}: expected {HELP}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
