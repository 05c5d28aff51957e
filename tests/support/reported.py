"""A hand-made set of exchanges where upstreams reported some token columns and not others, with the
usage figures every report must show for it (computed by hand)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.record.exchange import CostSource, Exchange, Usage
from proxy.store import rollup

HOUR = datetime(2026, 3, 5, 10, tzinfo=UTC)


def hand_made() -> list[Exchange]:
    """Model m: full usage, a total only, no usage; model t: totals only (hand-computed figures below)."""

    def ex(minute: int, model: str, usage: Usage, cost: float | None = None) -> Exchange:
        started = HOUR + timedelta(minutes=minute)
        made = Exchange(
            started_at=started, session_id="s", requested_model=model, returned_model=model, api="chat",
            method="POST", path="/v1/chat/completions", status=200, upstream_status=200, duration_ms=5.0,
        )  # fmt: skip
        made.finished_at, made.usage, made.cost_usd = started + timedelta(milliseconds=5), usage, cost
        made.cost_source = CostSource.COMPUTED if cost is not None else CostSource.UNKNOWN
        return made

    full = Usage.from_provider(prompt_tokens=10, completion_tokens=5, total_tokens=15, cached_tokens=2)
    return [
        ex(10, "m", full, 0.001),
        ex(20, "m", Usage.from_provider(total_tokens=7)),
        ex(40, "m", Usage()),
        ex(45, "t", Usage.from_provider(total_tokens=9)),
        ex(50, "t", Usage.from_provider(total_tokens=3)),
    ]


TOKEN_FIELDS = (*rollup.TOKENS, "cost_usd")
# Per model: each figure and how many exchanges reported it (``<field>_reported``).
NOTHING = dict.fromkeys(TOKEN_FIELDS, (None, 0))
WHOLE_HOUR = {
    "m": {
        **NOTHING,
        "prompt_tokens": (10, 1),
        "completion_tokens": (5, 1),
        "cached_tokens": (2, 1),
        "total_tokens": (22, 2),
        "cost_usd": (0.001, 1),
    },
    "t": {**NOTHING, "total_tokens": (12, 2)},
}
# From 10:15 on: m keeps its total-only and its no-usage exchange.
FROM_10_15 = {"m": {**NOTHING, "total_tokens": (7, 1)}, "t": WHOLE_HOUR["t"]}
