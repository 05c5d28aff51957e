"""usage_hourly, usage_daily: usage rollups with latency/TTFT histograms, backfilled from exchanges

Revision ID: 0002_usage_rollups
Revises: 0001_initial
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_usage_rollups"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

# Frozen copies of the shapes at this revision (a later change to the app must not change this step).
BUCKETS = 86
SUMS = (
    "requests",
    "errors",
    "usage_reported",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_known",
    "unknown_cost",
    "missing_usage",
)
BACKFILL_CHUNK = 20_000


def _create(name: str) -> None:
    op.create_table(
        name,
        sa.Column("period", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("model_requested", sa.String(256), nullable=False),
        sa.Column("upstream", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        *[sa.Column(name, sa.Integer(), nullable=False) for name in SUMS],
        sa.Column("cost_usd", sa.Float(), nullable=False),
        *[sa.Column(f"lat_{i:02d}", sa.Integer(), nullable=False) for i in range(BUCKETS)],
        *[sa.Column(f"ttft_{i:02d}", sa.Integer(), nullable=False) for i in range(BUCKETS)],
        sa.PrimaryKeyConstraint(
            "period", "model", "model_requested", "upstream", "key_fingerprint", "status", name=op.f(f"pk_{name}")
        ),
    )


def upgrade() -> None:
    _create("usage_hourly")
    _create("usage_daily")
    _backfill()


def _backfill() -> None:
    """Fold the exchanges already recorded into the new rollup, a chunk at a time."""
    from proxy.store import rollup

    text_columns = ("id", "model", "model_requested", "upstream", "key_fingerprint", "outcome", "usage_source")
    exchanges = sa.table(
        "exchanges",
        sa.column("started_at", sa.DateTime(timezone=True)),
        *[sa.column(name, sa.String()) for name in (*text_columns, "cost_source")],
        *[sa.column(name, sa.Integer()) for name in ("status", *SUMS[3:8])],
        *[sa.column(name, sa.Float()) for name in ("cost_usd", "duration_ms", "ttft_ms")],
    )
    bind = op.get_bind()
    last = ""
    while True:
        rows = [
            r._asdict()
            for r in bind.execute(
                sa.select(exchanges).where(exchanges.c.id > last).order_by(exchanges.c.id).limit(BACKFILL_CHUNK)
            )
        ]
        if not rows:
            return
        for table, increments in rollup.deltas(rows):
            bind.execute(rollup.upsert(bind.dialect.name, table), increments)
        last = rows[-1]["id"]


def downgrade() -> None:
    op.drop_table("usage_daily")
    op.drop_table("usage_hourly")
