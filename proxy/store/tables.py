"""The recorded schema, as SQLAlchemy 2 declarative models.

Invariants:
- ``exchanges`` is narrow: one row per exchange with every column a usage query filters or sums on, and
  no body data, so scans for dashboards stay cheap. Bodies live in ``exchange_bodies`` (1:1, cascade).
- Token columns are NULL when the provider reported nothing (``usage_source = 'missing'``), never 0, and
  each is NULL on its own when the provider reported others but not it (only ``total_tokens``, say).
- No column ever holds a secret: headers are stored redacted and keys only as a keyed fingerprint.
- ``usage_hourly`` and ``usage_daily`` are rollups of ``exchanges`` kept by the writer (see
  ``store/rollup.py``); they can always be rebuilt from ``exchanges``.
- The schema is made only by Alembic revisions under ``migrations/``; this module is their reference.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false
from sqlalchemy.types import DateTime, TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Timestamp(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps the zone; SQLite stores text without one and would hand back naive values, so
    values are normalised to UTC going in and marked UTC coming out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ExchangeRow(Base):
    __tablename__ = "exchanges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    session_id: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(Timestamp())
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp())
    duration_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    # The API family of the endpoint: chat, responses, messages, completions, embeddings, other.
    api: Mapped[str] = mapped_column(String(32), server_default="other")
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    upstream: Mapped[str] = mapped_column(String(64))
    model_requested: Mapped[str | None] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[int | None]
    upstream_status: Mapped[int | None]
    stream: Mapped[bool]
    outcome: Mapped[str] = mapped_column(String(32))
    finish_reason: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    total_tokens: Mapped[int | None]
    cached_tokens: Mapped[int | None]
    reasoning_tokens: Mapped[int | None]
    # Prompt tokens written to the provider's cache, and how many of them with a 1-hour lifetime.
    cache_write_tokens: Mapped[int | None]
    cache_write_1h_tokens: Mapped[int | None]
    usage_source: Mapped[str] = mapped_column(String(16))
    cost_usd: Mapped[float | None] = mapped_column(Float)
    cost_source: Mapped[str | None] = mapped_column(String(16))
    price_ref: Mapped[str | None] = mapped_column(String(256))
    key_fingerprint: Mapped[str | None] = mapped_column(String(64))
    end_user: Mapped[str | None] = mapped_column(String(256))
    match_key: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_exchanges_started_at", "started_at"),
        Index("ix_exchanges_model_started_at", "model", "started_at"),
        Index("ix_exchanges_session_started_at", "session_id", "started_at"),
        Index("ix_exchanges_key_started_at", "key_fingerprint", "started_at"),
        Index("ix_exchanges_match_key", "match_key"),
    )


class ExchangeBodyRow(Base):
    __tablename__ = "exchange_bodies"

    exchange_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("exchanges.id", ondelete="CASCADE"), primary_key=True
    )
    request_headers: Mapped[dict[str, Any]] = mapped_column(JsonType)
    request_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    response_headers: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # Decoded body for plain responses; the raw event-stream bytes for streams.
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    # A streamed response folded into the object a non-streamed call returns (JSON text).
    assembled: Mapped[str | None] = mapped_column(Text)
    # One [offset_ms, end_byte] pair per network read of the stream.
    stream_chunks: Mapped[list[Any] | None] = mapped_column(JsonType)
    event_count: Mapped[int]
    decode_errors: Mapped[int]
    usage_injected: Mapped[bool]
    # Bytes of the response body the client got, when it left early; NULL: all of them.
    delivered_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Bytes of the response body that passed the proxy (decoded); NULL in rows older than 0005.
    response_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # The stored response body is only the head of it (``max_record_bytes``).
    response_truncated: Mapped[bool] = mapped_column(server_default=false())


# --- replay (issue 3) ---
class SessionLinkRow(Base):
    """A session made from another one: ``proxy replay SESSION --to URL`` re-sent it (relation ``resend``)."""

    __tablename__ = "session_links"

    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source_session_id: Mapped[str] = mapped_column(String(128))
    relation: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    # Where it was re-sent (credentials stripped) and the model override, if any.
    target: Mapped[str | None] = mapped_column(String(1024))
    model: Mapped[str | None] = mapped_column(String(256))
    # The comparison report's totals.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JsonType)

    __table_args__ = (Index("ix_session_links_source_session_id", "source_session_id"),)


class ExchangeLinkRow(Base):
    """Which recorded exchange a re-sent exchange repeats."""

    __tablename__ = "exchange_links"

    exchange_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("exchanges.id", ondelete="CASCADE"), primary_key=True
    )
    source_exchange_id: Mapped[str] = mapped_column(String(36))

    __table_args__ = (Index("ix_exchange_links_source_exchange_id", "source_exchange_id"),)


# --- end replay ---


class MetaRow(Base):
    """Small key/value facts about the database itself (the fingerprint secret)."""

    __tablename__ = "proxy_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


exchanges = ExchangeRow.__table__
exchange_bodies = ExchangeBodyRow.__table__
proxy_meta = MetaRow.__table__
session_links = SessionLinkRow.__table__
exchange_links = ExchangeLinkRow.__table__


HISTOGRAM_BUCKETS = 86
ROLLUP_SUMS = (
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
    "cache_write_tokens",
    # How many exchanges reported each token column (0006): a sum over none of them is NULL, not 0.
    "prompt_tokens_reported",
    "completion_tokens_reported",
    "cached_tokens_reported",
    "reasoning_tokens_reported",
    "total_tokens_reported",
    "cache_write_tokens_reported",
)


def _rollup_table(name: str) -> Table:
    """Per UTC period (hour or day) x API x model x requested model x upstream x key x status: sums, histograms."""
    return Table(
        name,
        Base.metadata,
        Column("period", Timestamp, primary_key=True),
        Column("api", String(32), primary_key=True),
        Column("model", String(256), primary_key=True),
        Column("model_requested", String(256), primary_key=True),
        Column("upstream", String(64), primary_key=True),
        Column("key_fingerprint", String(64), primary_key=True),
        Column("status", Integer, primary_key=True),
        *[Column(name, Integer, nullable=False) for name in ROLLUP_SUMS],
        Column("cost_usd", Float, nullable=False),
        *[Column(f"lat_{i:02d}", Integer, nullable=False) for i in range(HISTOGRAM_BUCKETS)],
        *[Column(f"ttft_{i:02d}", Integer, nullable=False) for i in range(HISTOGRAM_BUCKETS)],
    )


usage_hourly = _rollup_table("usage_hourly")
usage_daily = _rollup_table("usage_daily")
