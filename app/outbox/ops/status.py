"""What operators see and do: the outbox's state, a stream in detail, retry, prune.

Everything here reads or changes `relay_cursors` (the relay's state per stream) and
`streams` (heads); nothing touches the events themselves except `prune`. What is
behind, retrying or failed is always in the pending set (`streams.pending`: the relay
clears a mark only when its cursor is at the head), so every count starts there and
costs what is pending, not how many streams exist. Retrying
puts a stream back in the relay's hands: state `active`, attempts 0, no wait, and a
nudge after the commit (the workers' sweep picks it up anyway if the nudge is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import iso_utc, utcnow
from app.core.errors import InvalidInput, NotFound
from app.outbox import writer
from app.outbox.retention import prune_events
from app.outbox.streams import parse_stream
from app.outbox.tables import Event, RelayCursor, Stream

log = logging.getLogger("herald.ops")

MAX_LISTED = 100


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return iso_utc(value) if value is not None else None


def _age(value: datetime | None, now: datetime) -> float | None:
    aware = _aware(value)
    return round(max(0.0, (now - aware).total_seconds()), 3) if aware else None


def _camel(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON keys as the rest of the API spells them; ages are in seconds."""
    out = {}
    for key, value in fields.items():
        head, *rest = key.split("_")
        name = head + "".join(part.title() for part in rest)
        out[name + "Seconds" if name.endswith("Age") else name] = value
    return out


@dataclass(frozen=True, slots=True)
class StreamLag:
    """One stream that is behind: how far, since when, and what the relay last said."""

    stream: str
    head: int
    dispatched: int
    pending: int
    state: str
    attempts: int
    oldest_pending_age: float | None
    next_attempt_at: str | None
    last_error: str | None
    failed_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return _camel(asdict(self))


@dataclass(frozen=True, slots=True)
class Status:
    """The outbox at a glance."""

    events_pending: int
    streams_behind: int
    oldest_pending_age: float | None
    failed_streams: int
    retrying_streams: int
    streams: list[StreamLag]

    def to_dict(self) -> dict[str, Any]:
        out = _camel(asdict(self))
        out["streams"] = [s.to_dict() for s in self.streams]
        return out


def _lag_rows(session: Session, now: datetime, where: Any, limit: int) -> list[StreamLag]:
    first_pending = (
        select(Event.created_at)
        .where(Event.stream == RelayCursor.stream, Event.offset == RelayCursor.dispatched + 1)
        .correlate(RelayCursor)
        .scalar_subquery()
    )
    rows = session.execute(
        select(RelayCursor, Stream.head, first_pending.label("oldest"))
        .join(Stream, Stream.name == RelayCursor.stream)
        .where(Stream.pending, where)
        .order_by(RelayCursor.state.desc(), first_pending.asc(), RelayCursor.stream)
        .limit(limit)
    ).all()
    return [
        StreamLag(
            stream=c.stream, head=int(head), dispatched=int(c.dispatched),
            pending=max(0, int(head) - int(c.dispatched)), state=c.state,
            attempts=int(c.attempts), oldest_pending_age=_age(oldest, now),
            next_attempt_at=_iso(c.next_attempt_at), last_error=c.last_error,
            failed_at=_iso(c.failed_at),
        )
        for c, head, oldest in rows
    ]


def matching(text: str | None, stream: Any = RelayCursor.stream,
             last_error: Any = RelayCursor.last_error) -> Any:
    """Streams whose name or last error holds `text` (any case); every stream if empty."""
    if not text:
        return true()
    return or_(stream.icontains(text, autoescape=True),
               last_error.icontains(text, autoescape=True))


def status(session: Session, *, now: datetime | None = None, limit: int = MAX_LISTED,
           search: str | None = None) -> Status:
    """Events pending, streams behind, the oldest pending event's age, failed streams, lag.

    One statement over the pending set: each pending stream's cursor and first pending
    event are looked up once, the totals are window aggregates over all of them, and
    the `limit` most urgent come back as rows (failed first, then the oldest). The
    totals are over every stream; the listed streams (behind or failed) only those whose
    name or last error holds `search`, when given."""
    now = now or utcnow()
    p = (
        select(Stream.name.label("stream"), Stream.head, RelayCursor.dispatched,
               RelayCursor.state, RelayCursor.attempts, RelayCursor.next_attempt_at,
               RelayCursor.last_error, RelayCursor.failed_at, Event.created_at.label("oldest"))
        .join(RelayCursor, RelayCursor.stream == Stream.name)
        .outerjoin(Event, and_(Event.stream == Stream.name,
                               Event.offset == RelayCursor.dispatched + 1))
        .where(Stream.pending)
    ).subquery("p")
    behind = p.c.head > p.c.dispatched
    failed_ = p.c.state == "failed"
    listed = and_(or_(behind, failed_), matching(search, p.c.stream, p.c.last_error))
    rows = session.execute(
        select(p, case((listed, 1), else_=0).label("listed"),
               func.count().filter(behind).over().label("n_behind"),
               func.sum(case((behind, p.c.head - p.c.dispatched), else_=0)).over()
               .label("n_events"),
               func.count().filter(failed_).over().label("n_failed"),
               func.count().filter(and_(p.c.state == "active", p.c.attempts > 0)).over()
               .label("n_retrying"),
               func.min(case((behind, p.c.oldest))).over().label("first"))
        .order_by(case((listed, 0), else_=1), p.c.state.desc(), p.c.oldest.asc(), p.c.stream)
        .limit(max(limit, 1))
    ).all()
    head = rows[0] if rows else None
    return Status(
        events_pending=int(head.n_events or 0) if head else 0,
        streams_behind=int(head.n_behind) if head else 0,
        oldest_pending_age=_age(head.first, now) if head else None,
        failed_streams=int(head.n_failed) if head else 0,
        retrying_streams=int(head.n_retrying) if head else 0,
        streams=[_lag(r, now) for r in rows[:limit] if r.listed],
    )


def _lag(r: Any, now: datetime) -> StreamLag:
    return StreamLag(
        stream=r.stream, head=int(r.head), dispatched=int(r.dispatched),
        pending=max(0, int(r.head) - int(r.dispatched)), state=r.state,
        attempts=int(r.attempts), oldest_pending_age=_age(r.oldest, now),
        next_attempt_at=_iso(r.next_attempt_at), last_error=r.last_error,
        failed_at=_iso(r.failed_at))


def failed(session: Session, *, now: datetime | None = None,
           limit: int = 1000) -> list[StreamLag]:
    """Streams the relay gave up on, oldest failure first: attempts, last error, since when."""
    now = now or utcnow()
    rows = _lag_rows(session, now, RelayCursor.state == "failed", limit)
    return sorted(rows, key=lambda r: (r.failed_at or "", r.stream))


@dataclass(frozen=True, slots=True)
class EventView:
    """One event of a stream as an operator sees it."""

    offset: int
    id: str
    type: str
    created_at: str
    published: bool
    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return _camel(asdict(self))


@dataclass(frozen=True, slots=True)
class StreamDetail:
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
        out = _camel(asdict(self))
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
        oldest_pending_age=_age(oldest, now),
        next_attempt_at=_iso(cursor.next_attempt_at) if cursor else None,
        last_error=cursor.last_error if cursor else None,
        failed_at=_iso(cursor.failed_at) if cursor else None,
        events=[EventView(offset=int(e.offset), id=e.id, type=e.type,
                          created_at=iso_utc(_aware(e.created_at) or now),
                          published=int(e.offset) <= dispatched, payload=e.payload)
                for e in recent],
    )


def _check_names(names: Sequence[str]) -> list[str]:
    if not names:
        raise InvalidInput("name at least one stream, or ask for all", code="invalid_argument")
    for name in names:
        parse_stream(name)
    return list(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class Retried:
    """What a retry did: the streams given back to the relay, and the named ones that were
    healthy (active, no failed attempt, no backoff wait) and were left as they were."""

    retried: list[str]
    healthy: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"retried": self.retried, "healthy": self.healthy}


def retry(
    factory: sessionmaker[Session], *, streams: Sequence[str] | None = None,
    all_failed: bool = False, actor: str = "unknown",
) -> Retried:
    """Give streams back to the relay now (names sorted in the answer).

    `streams`: those of these streams that are failed or waiting on a backoff; the
    healthy ones are reported, unchanged (unknown names raise NotFound and nothing
    changes). `all_failed`: every failed stream and every stream waiting on a backoff
    delay. The relay is nudged after the commit. `actor` (who asked) is logged.
    """
    if (streams is None) == (not all_failed):
        raise InvalidInput("give stream names or all, not both", code="invalid_argument")
    unhealthy = or_(RelayCursor.state == "failed", RelayCursor.attempts > 0,
                    RelayCursor.next_attempt_at.is_not(None))
    healthy: list[str] = []
    with factory() as session, session.begin():
        condition: Any = unhealthy
        if all_failed:  # only pending streams can be failed or waiting: look only there
            condition = and_(RelayCursor.stream.in_(select(Stream.name).where(Stream.pending)),
                             unhealthy)
        else:
            names = _check_names(streams or [])
            known = set(session.scalars(select(RelayCursor.stream)
                                        .where(RelayCursor.stream.in_(names))))
            missing = [n for n in names if n not in known]
            if missing:
                raise NotFound(f"no such stream: {', '.join(missing)}")
            condition = and_(RelayCursor.stream.in_(names), unhealthy)
        chosen = sorted(session.scalars(select(RelayCursor.stream).where(condition)
                                        .with_for_update()))
        if not all_failed:
            healthy = sorted(set(names) - set(chosen))
        if chosen:
            session.execute(
                update(RelayCursor).where(RelayCursor.stream.in_(chosen))
                .values(state="active", attempts=0, next_attempt_at=None, failed_at=None)
            )
    if chosen:
        log.info("outbox retry streams=%d names=%s by=%s", len(chosen), ",".join(chosen[:20]),
                 actor)
        with factory() as session:
            writer.nudge_now(session, chosen)  # the factory's nudger; the sweep relays anyway
    return Retried(retried=chosen, healthy=healthy)


def _check_retention(retention: timedelta) -> None:
    if retention.total_seconds() < 0:
        raise InvalidInput("retention must not be negative", code="invalid_argument")


def prune(factory: sessionmaker[Session], *, retention: timedelta) -> int:
    """Drop dispatched events older than `retention` (see app.outbox.retention)."""
    _check_retention(retention)
    return prune_events(factory, retention=retention)


@dataclass(frozen=True, slots=True)
class Prunable:
    """What `prune` would drop now: published events older than the cutoff."""

    events: int
    streams: int
    cutoff: str

    def to_dict(self) -> dict[str, Any]:
        return _camel(asdict(self))


def prunable(session: Session, *, retention: timedelta,
             now: datetime | None = None) -> Prunable:
    """`prune`'s dry run: the events (and streams) it would drop, changing nothing."""
    _check_retention(retention)
    cutoff = (now or utcnow()) - retention
    events, streams = session.execute(
        select(func.count(), func.count(func.distinct(Event.stream)))
        .select_from(Event).join(RelayCursor, RelayCursor.stream == Event.stream)
        .where(Event.created_at < cutoff, Event.offset <= RelayCursor.dispatched)
    ).one()
    return Prunable(events=int(events), streams=int(streams), cutoff=iso_utc(cutoff))
