"""exchanges, exchange_bodies and proxy_meta

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

JsonType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "exchanges",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("upstream", sa.String(64), nullable=False),
        sa.Column("model_requested", sa.String(256), nullable=True),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("upstream_status", sa.Integer(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("finish_reason", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=True),
        sa.Column("usage_source", sa.String(16), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("cost_source", sa.String(16), nullable=True),
        sa.Column("price_ref", sa.String(256), nullable=True),
        sa.Column("key_fingerprint", sa.String(64), nullable=True),
        sa.Column("end_user", sa.String(256), nullable=True),
        sa.Column("match_key", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchanges")),
    )
    op.create_index("ix_exchanges_started_at", "exchanges", ["started_at"])
    op.create_index("ix_exchanges_model_started_at", "exchanges", ["model", "started_at"])
    op.create_index("ix_exchanges_session_started_at", "exchanges", ["session_id", "started_at"])
    op.create_index("ix_exchanges_key_started_at", "exchanges", ["key_fingerprint", "started_at"])
    op.create_index("ix_exchanges_match_key", "exchanges", ["match_key"])
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
    op.create_table(
        "proxy_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_proxy_meta")),
    )


def downgrade() -> None:
    op.drop_table("proxy_meta")
    op.drop_table("exchange_bodies")
    op.drop_table("exchanges")
