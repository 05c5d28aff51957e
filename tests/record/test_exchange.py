"""Exchange ids: UUIDv7, time-ordered, unique."""

from __future__ import annotations

import time
import uuid

from proxy.record.exchange import new_exchange_id


def test_ids_are_uuid7_carrying_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_exchange_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for text in ids:
        value = uuid.UUID(text)
        assert str(value) == text
        assert value.version == 7 and value.variant == uuid.RFC_4122
        assert before <= value.int >> 80 <= after
    assert sorted(i[:13] for i in ids) == [i[:13] for i in ids], "time-ordered to the millisecond"
