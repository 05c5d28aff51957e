"""exchanges.api, cache-write token columns and exchange_bodies.delivered_bytes; rollups keyed by API family

Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0004_api_families"
down_revision = "0003_replay_links"

# The rollups keep 0002's periods, histogram buckets and sums (revisions are frozen, so reusing its
# definitions cannot change this step); this revision adds the API family to the key and one sum.
_0002 = importlib.import_module("proxy.migrations.versions.0002_usage_rollups")
SUMS_0002 = _0002.SUMS
SUMS = (*SUMS_0002, "cache_write_tokens")
TOKENS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "total_tokens")
# The API family of each endpoint, as this revision knows them; everything else is "other".
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
}
ROLLUPS = ("usage_hourly", "usage_daily")


def upgrade() -> None:
    with op.batch_alter_table("exchanges") as batch:
        batch.add_column(sa.Column("api", sa.String(32), nullable=False, server_default="other"))
        batch.add_column(sa.Column("cache_write_tokens", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cache_write_1h_tokens", sa.Integer(), nullable=True))
    with op.batch_alter_table("exchange_bodies") as batch:
        batch.add_column(sa.Column("delivered_bytes", sa.Integer(), nullable=True))
    exchanges = sa.table("exchanges", sa.column("api"), sa.column("method"), sa.column("path"))
    for path, api in ENDPOINTS.items():
        op.execute(
            exchanges.update()
            .where(exchanges.c.method == "POST", exchanges.c.path.in_([path, path + "/"]))
            .values(api=api)
        )
    _rebuild_rollups(with_api=True)


def downgrade() -> None:
    _rebuild_rollups(with_api=False)
    with op.batch_alter_table("exchange_bodies") as batch:
        batch.drop_column("delivered_bytes")
    with op.batch_alter_table("exchanges") as batch:
        batch.drop_column("cache_write_1h_tokens")
        batch.drop_column("cache_write_tokens")
        batch.drop_column("api")


def _rebuild_rollups(*, with_api: bool) -> None:
    """Replace both rollups with the shape of this revision (or the previous one) and refill them."""
    for name in ROLLUPS:
        op.drop_table(name)
        _create(name, with_api=with_api)
    _backfill(with_api=with_api)


def _key_columns(with_api: bool) -> list[str]:
    return [
        "period",
        *(["api"] if with_api else []),
        "model",
        "model_requested",
        "upstream",
        "key_fingerprint",
        "status",
    ]


def _create(name: str, *, with_api: bool) -> None:
    sums = SUMS if with_api else SUMS_0002
    key = _key_columns(with_api)
    strings = {"api": 32, "model": 256, "model_requested": 256, "upstream": 64, "key_fingerprint": 64}
    op.create_table(
        name,
        sa.Column("period", sa.DateTime(timezone=True), nullable=False),
        *[sa.Column(c, sa.String(strings[c]), nullable=False) for c in key if c in strings],
        sa.Column("status", sa.Integer(), nullable=False),
        *[sa.Column(c, sa.Integer(), nullable=False) for c in sums],
        sa.Column("cost_usd", sa.Float(), nullable=False),
        *[sa.Column(c, sa.Integer(), nullable=False) for c in (*_0002.LAT, *_0002.TTFT)],
        sa.PrimaryKeyConstraint(*key, name=op.f(f"pk_{name}")),
    )


def _backfill(*, with_api: bool) -> None:
    """Fold every recorded exchange into the rollups: one INSERT ... SELECT per table, in SQL."""
    bind = op.get_bind()
    names = ("api", "model", "model_requested", "upstream", "key_fingerprint", "outcome", "usage_source", "cost_source")
    ex = sa.table(
        "exchanges",
        *[sa.column(n, sa.String()) for n in names],
        sa.column("started_at", sa.DateTime(timezone=True)),
        *[sa.column(n, sa.Integer()) for n in ("status", *TOKENS, "cache_write_tokens")],
        *[sa.column(n, sa.Float()) for n in ("cost_usd", "duration_ms", "ttft_ms")],
    )
    sums = {**_0002._sums(ex), "cache_write_tokens": _0002._tokens(ex, "cache_write_tokens")}
    sum_names = SUMS if with_api else SUMS_0002
    for unit, name in (("hour", "usage_hourly"), ("day", "usage_daily")):
        key = {
            "period": _0002._period(ex.c.started_at, unit, bind.dialect.name),
            "api": ex.c.api,
            **{c: sa.func.coalesce(ex.c[c], "") for c in ("model", "model_requested", "upstream", "key_fingerprint")},
            "status": sa.func.coalesce(ex.c.status, 0),
        }
        key_exprs = [key[c] for c in _key_columns(with_api)]
        values = [
            *key_exprs,
            *(sums[n] for n in sum_names),
            sa.func.coalesce(sa.func.sum(ex.c.cost_usd), 0.0),
            *_0002._histogram(ex.c.duration_ms, _0002._bucket_edges()),
            *_0002._histogram(ex.c.ttft_ms, _0002._bucket_edges()),
        ]
        columns = [*_key_columns(with_api), *sum_names, "cost_usd", *_0002.LAT, *_0002.TTFT]
        target = sa.table(name, *[sa.column(c) for c in columns])
        bind.execute(target.insert().from_select(columns, sa.select(*values).select_from(ex).group_by(*key_exprs)))
