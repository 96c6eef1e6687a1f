"""One stream in detail: its relay cursor, its head and its last events with payloads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import iso_utc, utcnow
from app.core.errors import InvalidInput, NotFound
from app.outbox.ops.common import CamelView, age, aware, iso
from app.outbox.streams import parse_stream
from app.outbox.tables import Event, RelayCursor, Stream


@dataclass(frozen=True, slots=True)
class EventView(CamelView):
    """One event of a stream as an operator sees it."""

    offset: int
    id: str
    type: str
    created_at: str
    published: bool
    payload: dict[str, Any]



@dataclass(frozen=True, slots=True)
class StreamDetail(CamelView):
    """One stream: its relay cursor, its head, and its last events with their payloads."""

    stream: str
    epoch: str
    head: int
    dispatched: int
    pending: int
    pruned_through: int
    state: str
    attempts: int
    oldest_pending_age: float | None
    next_attempt_at: str | None
    last_error: str | None
    failed_at: str | None
    events: list[EventView]

    def to_dict(self) -> dict[str, Any]:
        out = CamelView.to_dict(self)  # not super(): slots=True makes a new class
        out["events"] = [e.to_dict() for e in self.events]
        return out


MAX_EVENTS = 100


def detail(session: Session, name: str, *, events: int = 20,
           now: datetime | None = None) -> StreamDetail:
    """A stream's cursor, head, attempts, next attempt and its last `events` events
    (newest first). Unknown stream: NotFound; a malformed name: InvalidInput."""
    parse_stream(name)
    if not 0 <= events <= MAX_EVENTS:
        raise InvalidInput(f"events: 0 to {MAX_EVENTS}", code="invalid_argument")
    now = now or utcnow()
    row = session.execute(select(Stream, RelayCursor)
                          .outerjoin(RelayCursor, RelayCursor.stream == Stream.name)
                          .where(Stream.name == name)).first()
    if row is None:
        raise NotFound(f"no such stream: {name}")
    stream, cursor = row
    dispatched = int(cursor.dispatched) if cursor else 0
    recent = session.scalars(select(Event).where(Event.stream == name)
                             .order_by(Event.offset.desc()).limit(events)).all()
    oldest = session.scalar(select(Event.created_at).where(
        Event.stream == name, Event.offset == dispatched + 1))
    return StreamDetail(
        stream=name, epoch=stream.epoch, head=int(stream.head), dispatched=dispatched,
        pending=max(0, int(stream.head) - dispatched), pruned_through=int(stream.pruned_through),
        state=cursor.state if cursor else "active", attempts=int(cursor.attempts) if cursor else 0,
        oldest_pending_age=age(oldest, now),
        next_attempt_at=iso(cursor.next_attempt_at) if cursor else None,
        last_error=cursor.last_error if cursor else None,
        failed_at=iso(cursor.failed_at) if cursor else None,
        events=[EventView(offset=int(e.offset), id=e.id, type=e.type,
                          created_at=iso_utc(aware(e.created_at) or now),
                          published=int(e.offset) <= dispatched, payload=e.payload)
                for e in recent],
    )
