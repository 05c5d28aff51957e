"""usage_hourly, usage_daily: usage rollups with latency/TTFT histograms, backfilled from exchanges

Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_usage_rollups"
down_revision = "0001_initial"

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


KEY = ("period", "model", "model_requested", "upstream", "key_fingerprint", "status")
LAT = tuple(f"lat_{i:02d}" for i in range(BUCKETS))
TTFT = tuple(f"ttft_{i:02d}" for i in range(BUCKETS))
COLUMNS = (*KEY, *SUMS, "cost_usd", *LAT, *TTFT)


def _create(name: str) -> None:
    op.create_table(
        name,
        sa.Column("period", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("model_requested", sa.String(256), nullable=False),
        sa.Column("upstream", sa.String(64), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        *[sa.Column(c, sa.Integer(), nullable=False) for c in SUMS],
        sa.Column("cost_usd", sa.Float(), nullable=False),
        *[sa.Column(c, sa.Integer(), nullable=False) for c in (*LAT, *TTFT)],
        sa.PrimaryKeyConstraint(*KEY, name=op.f(f"pk_{name}")),
    )


def upgrade() -> None:
    _create("usage_hourly")
    _create("usage_daily")
    _backfill()


def _bucket_edges() -> list[float]:
    """Lower bounds of histogram buckets 1..BUCKETS-1 at this revision: bucket i holds [2^((i-1)/4), 2^(i/4)) ms."""
    return [2 ** ((i - 1) / 4) for i in range(1, BUCKETS)]


def _count(test: sa.ColumnElement) -> sa.ColumnElement:
    """How many rows of a group pass ``test``."""
    return sa.func.sum(sa.case((test, 1), else_=0))


def _histogram(column: sa.ColumnElement, edges: list[float]) -> list[sa.ColumnElement]:
    """One COUNT per bucket of ``column`` (NULLs count nowhere): the rollup's histogram, in SQL."""
    bounds = [None, *edges, None]
    out = []
    for i in range(BUCKETS):
        low, high = bounds[i], bounds[i + 1]
        test = column.isnot(None)
        if low is not None:
            test = sa.and_(test, column >= low)
        if high is not None:
            test = sa.and_(test, column < high)
        out.append(_count(test))
    return out


def _period(column: sa.ColumnElement, unit: str, dialect: str) -> sa.ColumnElement:
    """The start of the UTC hour or day, in the form each backend stores a timestamp."""
    if dialect == "postgresql":
        return sa.func.timezone("UTC", sa.func.date_trunc(unit, sa.func.timezone("UTC", column)))
    # SQLite holds naive UTC text as SQLAlchemy writes it: 'YYYY-MM-DD HH:MM:SS.ffffff'.
    fmt = "%Y-%m-%d %H:00:00.000000" if unit == "hour" else "%Y-%m-%d 00:00:00.000000"
    return sa.func.strftime(fmt, column)


def _tokens(ex: sa.TableClause, name: str) -> sa.ColumnElement:
    """A token column summed over the exchanges that reported usage (a missing count adds nothing)."""
    return sa.func.sum(sa.case((ex.c.usage_source != "missing", sa.func.coalesce(ex.c[name], 0)), else_=0))


def _sums(ex: sa.TableClause) -> dict[str, sa.ColumnElement]:
    """Each of SUMS over a group of ``exchanges`` rows, as the writer counted them at this revision."""
    reported = ex.c.usage_source != "missing"
    error = sa.or_(sa.and_(ex.c.status.isnot(None), ex.c.status >= 400), ex.c.outcome != "complete")
    return {
        "requests": sa.func.count(),
        "errors": _count(error),
        "usage_reported": _count(reported),
        **{name: _tokens(ex, name) for name in SUMS[3:8]},
        "cost_known": _count(ex.c.cost_usd.isnot(None)),
        "unknown_cost": _count(ex.c.cost_source == "unknown"),
        "missing_usage": _count(sa.not_(reported)),
    }


def _backfill() -> None:
    """Fold the exchanges already recorded into the new rollups: one INSERT ... SELECT per table.

    Written in SQL against this revision's columns, so it means the same whatever the application's
    rollup code becomes later (a migration must never import live code).
    """
    bind = op.get_bind()
    ex = sa.table(
        "exchanges",
        *[sa.column(n, sa.String()) for n in ("model", "model_requested", "upstream", "key_fingerprint")],
        *[sa.column(n, sa.String()) for n in ("outcome", "usage_source", "cost_source")],
        sa.column("started_at", sa.DateTime(timezone=True)),
        *[sa.column(n, sa.Integer()) for n in ("status", *SUMS[3:8])],
        *[sa.column(n, sa.Float()) for n in ("cost_usd", "duration_ms", "ttft_ms")],
    )
    sums = _sums(ex)
    edges = _bucket_edges()
    for unit, name in (("hour", "usage_hourly"), ("day", "usage_daily")):
        key = [
            _period(ex.c.started_at, unit, bind.dialect.name),
            *[sa.func.coalesce(ex.c[c], "") for c in ("model", "model_requested", "upstream", "key_fingerprint")],
            sa.func.coalesce(ex.c.status, 0),
        ]
        values = [
            *key,
            *[sums[n] for n in SUMS],
            sa.func.coalesce(sa.func.sum(ex.c.cost_usd), 0.0),
            *_histogram(ex.c.duration_ms, edges),
            *_histogram(ex.c.ttft_ms, edges),
        ]
        target = sa.table(name, *[sa.column(c) for c in COLUMNS])
        select = sa.select(*values).select_from(ex).group_by(*key)
        bind.execute(target.insert().from_select(COLUMNS, select))


def downgrade() -> None:
    op.drop_table("usage_daily")
    op.drop_table("usage_hourly")
