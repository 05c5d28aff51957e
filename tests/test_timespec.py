"""Time arguments: ISO and relative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.timespec import parse_time

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("90m", NOW - timedelta(minutes=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("30s", NOW - timedelta(seconds=30)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:30:00Z", datetime(2026, 11, 1, 12, 30, tzinfo=UTC)),
        ("2026-11-01T14:30:00+02:00", datetime(2026, 11, 1, 12, 30, tzinfo=UTC)),
        ("2026-11-01 12:30", datetime(2026, 11, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "24x", "", "2026-13-01", "-5h"])
def test_parse_time_rejects_garbage_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match="expected an ISO date"):
        parse_time(text, NOW)
