"""exchange_bodies.response_bytes and response_truncated: a record keeps the head of a long response body

Create Date: 2026-12-02

``response_bytes`` counts the whole response body that passed the proxy (decoded); ``response_truncated``
says the stored body is only its head (``max_record_bytes``). Rows written before this revision kept
their bodies whole: NULL bytes, not truncated. ``delivered_bytes`` becomes a 64-bit integer, since a
body may now pass 2 GiB without the record holding it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_response_bytes"
down_revision = "0004_api_families"


def upgrade() -> None:
    with op.batch_alter_table("exchange_bodies") as batch:
        batch.add_column(sa.Column("response_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("response_truncated", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.alter_column("delivered_bytes", type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("exchange_bodies") as batch:
        batch.alter_column("delivered_bytes", type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=True)
        batch.drop_column("response_truncated")
        batch.drop_column("response_bytes")
