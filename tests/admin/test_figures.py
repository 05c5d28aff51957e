"""Numbers as people and programs read them: exact costs, durations to 0.01 ms, no float noise."""

from __future__ import annotations

import msgspec
import pytest

from proxy.admin.figures import csv_number, readable, table_number
from proxy.admin.views import encode


def test_json_costs_have_ten_fixed_places_and_durations_two() -> None:
    doc = {
        "cost_usd": 5.0999999999999995e-06,
        "duration_ms": 3.8203440000188493,
        "cost": {"usd": 2e-08, "source": "computed"},
        "ttft_ms": {"original": 1.23456, "new": None},
        "total_tokens": 12,
        "similarity": 0.123456789,
    }
    assert encode(doc) == (
        b'{"cost_usd":0.0000051000,"duration_ms":3.82,"cost":{"usd":0.0000000200,"source":"computed"},'
        b'"ttft_ms":{"original":1.23,"new":null},"total_tokens":12,"similarity":0.123456789}'
    )
    assert msgspec.json.decode(encode(doc))["cost_usd"] == pytest.approx(5.1e-06)
    assert readable([{"cost_usd": None}]) == [{"cost_usd": None}]


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("cost_usd", 2e-08, "0.00000002"),
        ("cost_usd", 0.00006135, "0.00006135"),
        ("cost_usd", 0.5, "0.5"),
        ("cost_usd", 1234.5678, "1,234.57"),
        ("cost_usd", 0.0, "0"),
        ("duration_ms", 3.8203440000188493, "3.82"),
        ("latency_p50_ms", 0.004, "0.00"),
    ],
)
def test_table_cells_keep_significant_digits(key: str, value: float, shown: str) -> None:
    assert table_number(key, value) == shown


def test_csv_cells() -> None:
    assert csv_number("cost_usd", 5.0999999999999995e-06) == "0.0000051000"
    assert csv_number("duration_ms", 3.8203440000188493) == 3.82
    assert csv_number("requests", 3) == 3
