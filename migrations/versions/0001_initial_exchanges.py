"""exchanges, exchange_bodies and proxy_meta

Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_initial"
down_revision = None

JsonType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    _exchanges()
    _exchange_bodies()
    op.create_table(
        "proxy_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_proxy_meta")),
    )


def _nullable(type_: sa.types.TypeEngine, *names: str) -> list[sa.Column]:
    """Columns of one type that may be NULL, in the order given."""
    return [sa.Column(name, type_, nullable=True) for name in names]


def _exchanges() -> None:
    op.create_table(
        "exchanges",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        *_nullable(sa.Float(), "duration_ms", "ttft_ms"),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("upstream", sa.String(64), nullable=False),
        *_nullable(sa.String(256), "model_requested", "model"),
        *_nullable(sa.Integer(), "status", "upstream_status"),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("finish_reason", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        *_nullable(
            sa.Integer(), "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"
        ),
        sa.Column("usage_source", sa.String(16), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("cost_source", sa.String(16), nullable=True),
        sa.Column("price_ref", sa.String(256), nullable=True),
        sa.Column("key_fingerprint", sa.String(64), nullable=True),
        sa.Column("end_user", sa.String(256), nullable=True),
        sa.Column("match_key", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchanges")),
    )
    for name, columns in (
        ("started_at", ["started_at"]),
        ("model_started_at", ["model", "started_at"]),
        ("session_started_at", ["session_id", "started_at"]),
        ("key_started_at", ["key_fingerprint", "started_at"]),
        ("match_key", ["match_key"]),
    ):
        op.create_index(f"ix_exchanges_{name}", "exchanges", columns)


def _exchange_bodies() -> None:
    op.create_table(
        "exchange_bodies",
        sa.Column("exchange_id", sa.String(36), nullable=False),
        sa.Column("request_headers", JsonType, nullable=False),
        sa.Column("request_body", sa.LargeBinary(), nullable=True),
        sa.Column("response_headers", JsonType, nullable=False),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("assembled", sa.Text(), nullable=True),
        sa.Column("stream_chunks", JsonType, nullable=True),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("decode_errors", sa.Integer(), nullable=False),
        sa.Column("usage_injected", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["exchange_id"],
            ["exchanges.id"],
            name=op.f("fk_exchange_bodies_exchange_id_exchanges"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("exchange_id", name=op.f("pk_exchange_bodies")),
    )


def downgrade() -> None:
    op.drop_table("proxy_meta")
    op.drop_table("exchange_bodies")
    op.drop_table("exchanges")
