"""The relay's pending marks (`pending_streams`) as tests read and set them by hand: what a
caught-up relay leaves (no mark), or a writer that rolled back after the relay caught up
(a mark with nothing to send)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from app.outbox.tables import PendingStream, Stream


def marked(session: Session) -> set[str]:
    """The streams marked pending."""
    return set(session.scalars(select(PendingStream.name)))


def unmark(session: Session, *names: str) -> None:
    """Drop the marks of `names` (every mark if none is named)."""
    session.execute(delete(PendingStream).where(PendingStream.name.in_(names))
                    if names else delete(PendingStream))


def mark(session: Session, *names: str) -> None:
    """Mark `names` (every stream if none is named) at their heads, as a writer would;
    marks that exist are left as they are."""
    streams = select(Stream.name, Stream.head, Stream.epoch, Stream.created_at) \
        .where(Stream.name.not_in(select(PendingStream.name)))
    if names:
        streams = streams.where(Stream.name.in_(names))
    session.execute(insert(PendingStream).from_select(["name", "head", "epoch", "since"],
                                                      streams))
