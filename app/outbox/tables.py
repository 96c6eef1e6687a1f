"""Outbox tables: streams (head + epoch), relay cursors (dispatched + failure state), events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, iso_utc, utcnow


def new_epoch() -> str:
    return uuid.uuid4().hex[:16]


class Stream(Base):
    """A stream's head: the last offset handed out, locked by writers to append."""

    __tablename__ = "streams"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(32), default=new_epoch)
    head: Mapped[int] = mapped_column(BigInteger, default=0)
    # Events with offset <= pruned_through are gone; replay from before it cannot recover.
    pruned_through: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PendingStream(Base):
    """The relay's work list: a row per stream that may have events the relay has not sent.

    A writer adds or updates its stream's row in the statement that bumps the head (same
    transaction; `head` is the head it set, so the row's head is the stream's committed
    head); the relay deletes the row only while its cursor is at that head and nobody
    holds the row (migration 0008). The table holds the pending streams only: the relay's
    claim and the outbox status cost what is pending, not what exists, and neither the
    head bump nor the clear writes an index entry of the `streams` table (its head bump
    is a HOT update).
    """

    __tablename__ = "pending_streams"
    __table_args__ = (
        Index("ix_pending_streams_since", "since", "name"),
        # The marks a claim may take, in name order, and those that wait, by the end of
        # their wait (migration 0011): a claim reads no mark of a stream that still waits.
        Index("ix_pending_streams_ready", "name", postgresql_where=text("not_before IS NULL"),
              sqlite_where=text("not_before IS NULL")),
        Index("ix_pending_streams_waiting", "not_before",
              postgresql_where=text("not_before IS NOT NULL"),
              sqlite_where=text("not_before IS NOT NULL")),
        {"postgresql_with": {"fillfactor": 80}})

    # A stream's name; no foreign key (its check on every mark added cost a tenth of a
    # batch): a trigger on `streams` deletes a deleted stream's mark (migration 0008).
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    head: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[str] = mapped_column(String(32))  # the stream's (it never changes)
    # The writer's timestamp of the events that made the row, kept while it exists unless
    # a later writer's is earlier: a lower bound of the stream's first pending event's time
    # (the outbox status walks `ix_pending_streams_since` oldest first).
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Until when the stream waits (migration 0009): NULL while it may be claimed, the end
    # of its backoff after a refused publish, FAILED_NOT_BEFORE once it failed (until an
    # operator retries it). The claim passes a waiting stream's mark by without looking
    # up its cursor, which stays the authority.
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                        nullable=True)


# `pending_streams.not_before` of a failed stream: it waits for an operator.
FAILED_NOT_BEFORE = datetime(9999, 12, 31, tzinfo=UTC)


class RelayCursor(Base):
    """A stream's relay state, locked by the relay only: what went out, what failed."""

    __tablename__ = "relay_cursors"
    __table_args__ = (
        Index("ix_relay_cursors_state", "state", "next_attempt_at"),
        # The failed cursors only, longest failed first (migration 0010): the outbox
        # status and the failed list read a page of them, however many failed.
        Index("ix_relay_cursors_failed", "failed_at", "stream",
              postgresql_where=text("state = 'failed'"), sqlite_where=text("state = 'failed'")),
    )

    stream: Mapped[str] = mapped_column(
        ForeignKey("streams.name", ondelete="CASCADE"), primary_key=True
    )
    dispatched: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(10), default="active")  # active | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Event(Base):
    """One durable event: append-only, unique per (stream, offset)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("stream", "offset", name="uq_events_stream_offset"),
        Index("ix_events_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    stream: Mapped[str] = mapped_column(ForeignKey("streams.name", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OutboxCount(Base):
    """The outbox's totals as delta rows: each total is the sum of its column.

    Written only by database triggers on `streams`, `relay_cursors` (migration 0005) and
    `pending_streams` (0008), in the transaction of each change; read and folded by
    `app.outbox.counts`."""

    __tablename__ = "outbox_counts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"),
                                    primary_key=True, autoincrement=True)
    appended: Mapped[int] = mapped_column(BigInteger, server_default="0")  # sum of heads
    dispatched: Mapped[int] = mapped_column(BigInteger, server_default="0")  # sum of cursors
    marked: Mapped[int] = mapped_column(BigInteger, server_default="0")  # pending_streams rows
    failed: Mapped[int] = mapped_column(BigInteger, server_default="0")  # state failed
    retrying: Mapped[int] = mapped_column(BigInteger, server_default="0")  # active, attempts > 0


class IdempotencyKey(Base):
    """A service's idempotency key and the event it produced."""

    __tablename__ = "idempotency_keys"

    service: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event as clients see it: its name, payload and meta."""

    id: str
    stream: str
    offset: int
    epoch: str
    type: str
    payload: dict[str, Any]
    ts: datetime

    @property
    def meta(self) -> dict[str, Any]:
        return {"id": self.id, "stream": self.stream, "offset": self.offset,
                "epoch": self.epoch, "ts": iso_utc(self.ts)}

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "payload": self.payload, "meta": self.meta}
