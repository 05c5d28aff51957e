"""usage_hourly/usage_daily: how many exchanges reported each token column

Create Date: 2026-12-02

A rollup summed a token column over every exchange that reported any usage, so a group whose upstream
reported only ``total_tokens`` read ``prompt_tokens: 0``. Each column now has its count
(``<column>_reported``), and a report shows the sum only when it is not 0.

The counts are filled from the exchanges still recorded. A rollup row may also hold exchanges pruned
since: their part of a column's sum (the row's sum less the kept exchanges') proves they reported it
when it is not 0, and they then count as having reported it; when it is 0 nothing proves it and they
count as not having reported it (NULL rather than a 0 nobody reported).

Frozen: nothing is imported from the application; the token columns and the period expression are
those of revisions 0004 and 0002 (frozen too, so reusing them cannot change this step).
"""

from __future__ import annotations

import importlib
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_reported_counts"
down_revision = "0005_response_bytes"

_0002 = importlib.import_module("proxy.migrations.versions.0002_usage_rollups")
_0004 = importlib.import_module("proxy.migrations.versions.0004_api_families")
TOKENS = (*_0004.TOKENS, "cache_write_tokens")
COUNTS = tuple(f"{name}_reported" for name in TOKENS)
KEY = ("period", "api", "model", "model_requested", "upstream", "key_fingerprint", "status")
ROLLUPS = (("hour", "usage_hourly"), ("day", "usage_daily"))


def upgrade() -> None:
    for _, name in ROLLUPS:
        with op.batch_alter_table(name) as batch:
            for column in COUNTS:
                batch.add_column(sa.Column(column, sa.Integer(), nullable=False, server_default="0"))
    bind = op.get_bind()
    for unit, name in ROLLUPS:
        _backfill(bind, unit, name)


def downgrade() -> None:
    for _, name in ROLLUPS:
        with op.batch_alter_table(name) as batch:
            for column in reversed(COUNTS):
                batch.drop_column(column)


def _kept(bind: Any, unit: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Per rollup key, from the exchanges: (reported usage, count of each column, sum of each column)."""
    strings = ("api", "model", "model_requested", "upstream", "key_fingerprint", "usage_source")
    ex = sa.table(
        "exchanges",
        *[sa.column(n, sa.String()) for n in strings],
        sa.column("started_at", sa.DateTime(timezone=True)),
        *[sa.column(n, sa.Integer()) for n in ("status", *TOKENS)],
    )
    reported = ex.c.usage_source != "missing"
    key = [
        _0002._period(ex.c.started_at, unit, bind.dialect.name),
        *[sa.func.coalesce(ex.c[c], "") for c in ("api", "model", "model_requested", "upstream", "key_fingerprint")],
        sa.func.coalesce(ex.c.status, 0),
    ]
    values = [
        sa.func.count(sa.case((reported, 1))),
        *[sa.func.count(sa.case((reported, ex.c[n]))) for n in TOKENS],
        *[sa.func.coalesce(sa.func.sum(sa.case((reported, ex.c[n]))), 0) for n in TOKENS],
    ]
    rows = bind.execute(sa.select(*key, *values).group_by(*key))
    return {tuple(r[: len(KEY)]): tuple(int(v) for v in r[len(KEY) :]) for r in rows}


def _backfill(bind: Any, unit: str, name: str) -> None:
    rollup = sa.table(name, *[sa.column(c) for c in (*KEY, "usage_reported", *TOKENS, *COUNTS)])
    kept = _kept(bind, unit)
    n = len(TOKENS)
    changes = []
    for row in bind.execute(sa.select(*[rollup.c[c] for c in (*KEY, "usage_reported", *TOKENS)])):
        values = row._mapping
        reported, *rest = kept.get(tuple(row[: len(KEY)]), (0,) * (1 + 2 * n))
        counts, sums = rest[:n], rest[n:]
        gone = max(0, int(values["usage_reported"]) - reported)  # pruned exchanges that had reported usage
        change = {f"k_{c}": values[c] for c in KEY}
        for i, token in enumerate(TOKENS):
            pruned_sum = int(values[token]) - sums[i]
            change[COUNTS[i]] = counts[i] + (gone if pruned_sum > 0 else 0)
        changes.append(change)
    if changes:
        update = (
            rollup.update()
            .where(*[rollup.c[c] == sa.bindparam(f"k_{c}") for c in KEY])
            .values({c: sa.bindparam(c) for c in COUNTS})
        )
        bind.execute(update, changes)
