"""Pricing: rates per token kind, provider cost, unknown vs none, effective dates, name resolution."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from proxy.config import ConfigError, Price
from proxy.record.exchange import CostSource, Exchange, Usage
from proxy.usage.pricing import PriceTable, candidate_names, token_cost

AT = datetime(2025, 7, 1, 12, tzinfo=UTC)


TABLE = PriceTable(
    {
        "my-model": Price(input=2.0, cached_input=0.5, output=8.0, reasoning=12.0),
        "plain": Price(input=1.0, output=3.0),
        "history": [
            Price(input=10.0, output=40.0),
            Price(input=2.0, output=8.0, effective_from=date(2025, 6, 10)),
            Price(input=1.0, output=4.0, effective_from=date(2026, 1, 1)),
        ],
        "future-only": Price(input=1.0, output=1.0, effective_from=date(2030, 1, 1)),
        "vendor/some-model": Price(input=0.5, output=0.5),
    },
    aliases={"My-Deployment": "plain"},
    bundled=False,
)


def test_cached_tokens_priced_at_cached_rate_and_not_double_counted() -> None:
    cost = TABLE.cost(["my-model"], AT, Usage(prompt_tokens=1000, completion_tokens=0, cached_tokens=400))
    # 600 uncached at $2/M + 400 cached at $0.50/M: each prompt token priced once.
    assert cost.usd == pytest.approx((600 * 2.0 + 400 * 0.5) / 1e6)
    assert cost.source is CostSource.COMPUTED and cost.ref == "config:my-model"


def test_reasoning_tokens_priced_at_reasoning_rate_inside_completion() -> None:
    cost = TABLE.cost(["my-model"], AT, Usage(prompt_tokens=0, completion_tokens=500, reasoning_tokens=200))
    assert cost.usd == pytest.approx((300 * 8.0 + 200 * 12.0) / 1e6)


def test_absent_cached_and_reasoning_rates_fall_back_to_input_and_output() -> None:
    tokens = Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=500, reasoning_tokens=50)
    assert token_cost(Price(input=1.0, output=3.0), tokens) == pytest.approx((1000 * 1.0 + 100 * 3.0) / 1e6)


def test_provider_cost_wins_over_the_table() -> None:
    cost = TABLE.cost(["my-model"], AT, Usage(prompt_tokens=10, completion_tokens=10), provider_cost=0.0123)
    assert (cost.usd, cost.source) == (0.0123, CostSource.PROVIDER)


def test_unknown_price_is_null_never_zero() -> None:
    cost = TABLE.cost(["nobody-prices-this"], AT, Usage(prompt_tokens=10, completion_tokens=10))
    assert cost.usd is None and cost.source is CostSource.UNKNOWN


def test_missing_usage_is_unknown_when_billable_and_none_when_not() -> None:
    assert TABLE.cost(["plain"], AT, Usage()).source is CostSource.UNKNOWN
    not_billed = TABLE.cost(["plain"], AT, Usage(), upstream_ok=False)
    assert not_billed.usd is None and not_billed.source is CostSource.NONE


@pytest.mark.parametrize(
    ("when", "expected_input", "ref"),
    [
        (datetime(2025, 6, 9, 23, 59, tzinfo=UTC), 10.0, "config:history"),
        (datetime(2025, 6, 10, 0, 0, tzinfo=UTC), 2.0, "config:history@2025-06-10"),
        (datetime(2026, 3, 1, tzinfo=UTC), 1.0, "config:history@2026-01-01"),
    ],
)
def test_effective_dates_pick_the_entry_in_force(when: datetime, expected_input: float, ref: str) -> None:
    cost = TABLE.cost(["history"], when, Usage(prompt_tokens=1_000_000, completion_tokens=0))
    assert cost.usd == pytest.approx(expected_input) and cost.ref == ref


def test_a_model_priced_only_in_the_future_is_unknown_before() -> None:
    assert TABLE.cost(["future-only"], AT, Usage(prompt_tokens=1, completion_tokens=1)).source is CostSource.UNKNOWN


@pytest.mark.parametrize(
    ("name", "ref"),
    [
        ("plain-2024-08-06", "config:plain"),
        ("plain-20241022", "config:plain"),
        ("plain-0613", "config:plain"),
        ("PLAIN", "config:plain"),
        ("openai/plain", "config:plain"),
        ("openai/plain-2024-08-06", "config:plain"),
        ("my-deployment", "config:plain"),
        ("some-model", "config:vendor/some-model"),
        ("vendor/some-model", "config:vendor/some-model"),
    ],
)
def test_model_name_resolution(name: str, ref: str) -> None:
    entry = TABLE.lookup([name], AT)
    assert entry is not None and entry.ref == ref


def test_resolution_does_not_strip_non_dates() -> None:
    assert "plain-2507" not in candidate_names("plain-2507", {})[1:]  # 25 is not a month
    assert TABLE.lookup(["plain-2507"], AT) is None


def test_reported_model_tried_before_requested() -> None:
    assert TABLE.lookup(["my-model-2025-01-01", "plain"], AT).ref == "config:my-model"
    assert TABLE.lookup([None, "plain"], AT).ref == "config:plain"


def test_config_entry_replaces_bundled_entry() -> None:
    bundled = PriceTable()
    assert bundled.lookup(["gpt-4o-2024-08-06"], AT).ref == "bundled:gpt-4o"
    override = PriceTable({"gpt-4o": Price(input=1.0, output=1.0)})
    assert override.lookup(["gpt-4o-2024-08-06"], AT).ref == "config:gpt-4o"
    assert bundled.lookup(["gpt-4o-2024-05-13"], AT).price.input == 5.0  # the exact dated entry wins


def test_bundled_o3_history() -> None:
    bundled = PriceTable()
    assert bundled.lookup(["o3-2025-04-16"], datetime(2025, 5, 1, tzinfo=UTC)).price.input == 10.0
    assert bundled.lookup(["o3-2025-04-16"], datetime(2025, 7, 1, tzinfo=UTC)).price.input == 2.0


def test_apply_to_exchange_uses_usage_and_status() -> None:
    usage = Usage.from_provider(
        prompt_tokens=100, completion_tokens=50, total_tokens=150, cached_tokens=40, reasoning_tokens=10
    )
    ex = Exchange(started_at=AT, upstream_status=200, returned_model="my-model-2025-05-05", usage=usage)
    TABLE.apply(ex)
    assert ex.cost_source is CostSource.COMPUTED
    assert ex.cost_usd == pytest.approx((60 * 2.0 + 40 * 0.5 + 40 * 8.0 + 10 * 12.0) / 1e6)
    failed = Exchange(started_at=AT, upstream_status=429, requested_model="my-model")
    TABLE.apply(failed)
    assert failed.cost_usd is None and failed.cost_source is CostSource.NONE


def test_bad_prices_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"pricing\.x\.input: must be >= 0"):
        PriceTable({"x": Price(input=-1.0)}, bundled=False)
    with pytest.raises(ConfigError, match="two entries"):
        PriceTable({"x": [Price(input=1.0), Price(input=2.0)]}, bundled=False)


def test_cache_writes_priced_at_their_own_rates_each_token_once() -> None:
    """Anthropic-style: 1,000 prompt tokens of which 300 read from cache and 500 written (200 for 1 hour)."""
    price = Price(input=3.0, output=15.0, cached_input=0.30, cache_write=3.75, cache_write_1h=6.0)
    usage = Usage(
        prompt_tokens=1000, completion_tokens=100, cached_tokens=300, cache_write_tokens=500, cache_write_1h_tokens=200
    )
    expected = (200 * 3.0 + 300 * 0.30 + 300 * 3.75 + 200 * 6.0 + 100 * 15.0) / 1e6
    assert token_cost(price, usage) == pytest.approx(expected)
    assert round(expected, 6) == 0.004515
    # Absent rates fall back: a 1-hour write at the 5-minute rate, a write at the input price.
    assert token_cost(Price(input=3.0, output=15.0, cache_write=3.75), usage) == pytest.approx(
        (200 * 3.0 + 300 * 3.0 + 300 * 3.75 + 200 * 3.75 + 100 * 15.0) / 1e6
    )
    assert token_cost(Price(input=3.0, output=15.0), usage) == pytest.approx((1000 * 3.0 + 100 * 15.0) / 1e6)


BUNDLED = PriceTable()


@pytest.mark.parametrize(
    ("model", "ref", "rates"),
    [
        # input, cache read, 5-minute write (1.25x input), 1-hour write (2x input), output: USD per million
        ("claude-sonnet-4-5-20250929", "bundled:claude-sonnet-4-5", (3.0, 0.30, 3.75, 6.0, 15.0)),
        ("claude-haiku-4-5-20251001", "bundled:claude-haiku-4-5", (1.0, 0.10, 1.25, 2.0, 5.0)),
        ("claude-opus-4-5-20251101", "bundled:claude-opus-4-5", (5.0, 0.50, 6.25, 10.0, 25.0)),
        ("claude-opus-4-1-20250805", "bundled:claude-opus-4-1", (15.0, 1.50, 18.75, 30.0, 75.0)),
        ("claude-sonnet-4-20250514", "bundled:claude-sonnet-4", (3.0, 0.30, 3.75, 6.0, 15.0)),
        ("claude-3-5-haiku-20241022", "bundled:claude-3-5-haiku", (0.80, 0.08, 1.0, 1.6, 4.0)),
    ],
)
def test_bundled_anthropic_entries_price_each_kind_of_token(
    model: str, ref: str, rates: tuple[float, float, float, float, float]
) -> None:
    entry = BUNDLED.lookup([model], AT)
    assert entry is not None and entry.ref == ref
    p = entry.price
    assert (p.input, p.cached_input, p.cache_write, p.cache_write_1h, p.output) == rates
    assert p.cache_write == pytest.approx(1.25 * p.input) and p.cache_write_1h == pytest.approx(2 * p.input)


def test_a_messages_usage_costs_what_anthropic_bills_to_the_cent() -> None:
    """A Messages body as Anthropic reports it, through the family's mapping, priced by the bundled table.

    claude-sonnet-4-5: 40,000 uncached input at $3/M = $0.12; 600,000 cache reads at $0.30/M = $0.18;
    80,000 5-minute writes at $3.75/M = $0.30; 50,000 1-hour writes at $6/M = $0.30; 20,000 output at
    $15/M = $0.30. Total $1.20.
    """
    from proxy.apis.messages.family import MESSAGES
    from proxy.testing.fake_upstream.messages import cache_usage

    cache = cache_usage(read=600_000, five_minutes=80_000, one_hour=50_000)
    usage = {"input_tokens": 40_000, **cache, "output_tokens": 20_000}
    body = json.dumps({"type": "message", "model": "claude-sonnet-4-5-20250929", "usage": usage}).encode()
    folded = MESSAGES.fold_body(body)
    cost = BUNDLED.cost([folded.model], AT, folded.usage)
    assert cost.ref == "bundled:claude-sonnet-4-5" and cost.source is CostSource.COMPUTED
    assert round(cost.usd or 0, 2) == 1.20 and cost.usd == pytest.approx(1.20)
    # Cache reads and writes are part of the prompt: 40,000 + 600,000 + 130,000.
    assert folded.usage.prompt_tokens == 770_000
