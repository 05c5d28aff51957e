"""session_links and exchange_links: a re-sent session and its exchanges point at what they repeat

Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_replay_links"
down_revision = "0002_usage_rollups"

JsonType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "session_links",
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("source_session_id", sa.String(128), nullable=False),
        sa.Column("relation", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target", sa.String(1024), nullable=True),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("summary", JsonType, nullable=True),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_session_links")),
    )
    op.create_index("ix_session_links_source_session_id", "session_links", ["source_session_id"])
    op.create_table(
        "exchange_links",
        sa.Column("exchange_id", sa.String(36), nullable=False),
        sa.Column("source_exchange_id", sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(
            ["exchange_id"],
            ["exchanges.id"],
            name=op.f("fk_exchange_links_exchange_id_exchanges"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("exchange_id", name=op.f("pk_exchange_links")),
    )
    op.create_index("ix_exchange_links_source_exchange_id", "exchange_links", ["source_exchange_id"])


def downgrade() -> None:
    op.drop_table("exchange_links")
    op.drop_table("session_links")
