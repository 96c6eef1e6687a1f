"""The inbox's storage: per user and stream a read/seen watermark, per item the exceptions.

An item's state is derived, never written per user at publish time (a role stream's
notification is an item of every user of that role):

- read:     the item's own `read` if set, else `offset <= read_through` of its stream;
- seen:     the item's own `seen`, or `offset <= seen_through`;
- archived: the item's own `archived`.

"Mark all read" raises the watermarks to the stream heads and clears the few explicit
`read = false` rows: O(1) in the number of notifications. An item row references its
event (ON DELETE CASCADE): when retention prunes the event, its row goes with it, and
the item leaves the inbox and the counts, which are derived from what exists.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, literal_column
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.outbox.tables import Event

NOTIFICATION = "notification"
# A literal (not a bound parameter), so that the planner matches the partial indexes below.
IS_NOTIFICATION = Event.type == literal_column(f"'{NOTIFICATION}'")


class InboxCursor(Base):
    """One user's watermarks on one stream (their user stream or their role stream)."""

    __tablename__ = "inbox_cursors"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(100), primary_key=True)
    read_through: Mapped[int] = mapped_column(BigInteger, default=0)
    seen_through: Mapped[int] = mapped_column(BigInteger, default=0)


class InboxItem(Base):
    """One user's explicit state of one notification: an exception to the watermarks."""

    __tablename__ = "inbox_items"
    __table_args__ = (
        Index("ix_inbox_items_event_id", "event_id"),  # the cascade from a pruned event
        Index("ix_inbox_items_user_stream_offset", "user_id", "stream", "offset"),
    )

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    event_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(100))
    offset: Mapped[int] = mapped_column(BigInteger)
    read: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # None: the watermark
    seen: Mapped[bool] = mapped_column(Boolean, default=False)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)


# Notifications only (a small part of the events table): paging newest first. The
# counts after a watermark go along the events' unique (stream, offset) index (migration
# 0007 dropped a partial copy of it: one index leaf fewer written per event appended).
NOTIFICATIONS_BY_TIME = Index(
    "ix_events_notification_created", Event.stream, Event.created_at, Event.offset,
    postgresql_where=IS_NOTIFICATION, sqlite_where=IS_NOTIFICATION)

__all__ = ["IS_NOTIFICATION", "NOTIFICATION", "InboxCursor", "InboxItem"]
