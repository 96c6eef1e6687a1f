"""Reading a stream's history: the head, whether a position can be recovered, events after it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import Gone
from app.core.jsoncodec import loads
from app.outbox.tables import Event, EventRecord, Stream
from app.outbox.writer import ensure_stream

REPLAY_BATCH = 500


@dataclass(frozen=True, slots=True)
class Head:
    """A stream's last offset and epoch, and the last offset that was pruned."""

    stream: str
    offset: int
    epoch: str
    pruned_through: int

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "epoch": self.epoch}

    def can_recover(self, offset: int, epoch: str | None) -> bool:
        """True when every event after `offset` is still here, under the same epoch."""
        if epoch is not None and epoch != self.epoch:
            return False
        return self.pruned_through <= offset <= self.offset


def read_head(session: Session, stream: str) -> Head:
    row = session.get(Stream, stream)
    if row is None:
        ensure_stream(session, stream)
        row = session.get(Stream, stream)
        assert row is not None
    return Head(stream, int(row.head), row.epoch, int(row.pruned_through))


def read_after(
    session: Session, stream: str, after: int, *, limit: int, epoch: str
) -> list[EventRecord]:
    # Core rows, payload as text decoded by app.core.jsoncodec: replays read thousands.
    rows = session.connection().execute(
        select(Event.id, Event.offset, Event.type, cast(Event.payload, Text), Event.created_at)
        .where(Event.stream == stream, Event.offset > after)
        .order_by(Event.offset)
        .limit(limit)
    ).all()
    return [EventRecord(id_, stream, int(offset), epoch, type_, loads(payload), created_at)
            for id_, offset, type_, payload, created_at in rows]


def _check_contiguous(stream: str, after: int, events: list[EventRecord], head: int) -> None:
    """Offsets are gapless: the first event after `after` must be after+1 (unless none is due).

    A hole means retention removed it after the head was read: Gone, never a silent skip.
    """
    first = events[0].offset if events else None
    if (first is not None and first != after + 1) or (first is None and head > after):
        raise Gone(f"events of {stream} after {after} were pruned")


def page(session: Session, stream: str, after: int, limit: int) -> tuple[list[EventRecord], Head]:
    """Up to `limit` events after `after`; Gone if some of them were pruned."""
    head = read_head(session, stream)
    if after < head.pruned_through:
        raise Gone(
            f"events of {stream} after {after} were pruned (kept from {head.pruned_through + 1})"
        )
    events = read_after(session, stream, after, limit=limit, epoch=head.epoch)
    _check_contiguous(stream, after, events, head.offset)
    return events, head


def iter_after(
    factory: sessionmaker[Session], stream: str, after: int, epoch: str,
    batch: int = REPLAY_BATCH,
) -> Iterator[list[EventRecord]]:
    """Events after `after` in bounded batches, each read in its own short transaction.

    Each batch is one index range scan on (stream, offset): the cost grows with what is
    read, not with the table. Raises Gone if a batch does not start right after `after`
    (pruned meanwhile).
    """
    while True:
        with factory() as session, session.begin():
            events = read_after(session, stream, after, limit=batch, epoch=epoch)
        if not events:
            return
        _check_contiguous(stream, after, events, 0)
        yield events
        after = events[-1].offset
        if len(events) < batch:
            return
