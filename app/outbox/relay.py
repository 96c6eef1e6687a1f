"""The relay: claim streams with undispatched events, publish them in offset order, advance.

Streams are claimed, not rows (`FOR UPDATE OF relay_cursors SKIP LOCKED`): two relays
work on different streams in parallel and never on one stream at once, so a stream's
events always go out in offset order. The cursor advances in the same transaction that
holds the claim, after the publish succeeded: a crash between the two re-sends the
batch (at least once), never skips it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Text, cast, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.core.errors import PublishRejected, TransportDown
from app.core.jsoncodec import loads
from app.outbox.publisher import Publisher
from app.outbox.tables import Event, EventRecord, RelayCursor, Stream

log = logging.getLogger("herald.relay")


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """How hard the relay tries before a stream waits for an operator."""

    max_attempts: int = 8
    backoff: float = 1.0
    backoff_cap: float = 300.0
    max_streams: int = 100
    max_events: int = 500

    def delay(self, attempts: int) -> float:
        """Seconds before retry `attempts`+1: doubles each time, +0-25% jitter, capped."""
        base = self.backoff * (2 ** max(attempts - 1, 0))
        return float(min(self.backoff_cap, base * (1 + random.uniform(0, 0.25))))


@dataclass(slots=True)
class RelayReport:
    """What one relay run did."""

    published: int = 0
    batches: int = 0
    streams: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    transport_down: str | None = None


Hook = Callable[[Sequence[EventRecord]], None]


def relay(
    *,
    session_factory: sessionmaker[Session],
    publisher: Publisher,
    policy: RelayPolicy,
    streams: Sequence[str] | None = None,
    max_batches: int = 10_000,
    clock: Callable[[], datetime] = utcnow,
    on_published: Hook | None = None,
) -> RelayReport:
    """Relay until nothing claimable is pending (or the transport is down)."""
    report = RelayReport()
    for _ in range(max_batches):
        claimed = _relay_batch(session_factory=session_factory, publisher=publisher,
                               policy=policy, streams=streams, clock=clock, report=report,
                               on_published=on_published)
        if not claimed or report.transport_down:
            break
    return report


def _relay_batch(
    *,
    session_factory: sessionmaker[Session],
    publisher: Publisher,
    policy: RelayPolicy,
    streams: Sequence[str] | None,
    clock: Callable[[], datetime],
    report: RelayReport,
    on_published: Hook | None,
) -> int:
    with session_factory() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # Losing this transaction in a database crash only re-sends the batch (delivery
            # is at least once), so it need not wait for its WAL flush.
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        now = clock()
        claim = (
            select(RelayCursor.stream, RelayCursor.dispatched, RelayCursor.attempts, Stream.epoch)
            .join(Stream, Stream.name == RelayCursor.stream)
            .where(
                Stream.head > RelayCursor.dispatched,
                RelayCursor.state == "active",
                or_(RelayCursor.next_attempt_at.is_(None), RelayCursor.next_attempt_at <= now),
            )
            .order_by(RelayCursor.stream)
            .limit(policy.max_streams)
            .with_for_update(of=RelayCursor, skip_locked=True)
        )
        if streams is not None:
            claim = claim.where(RelayCursor.stream.in_(list(streams)))
        rows = session.execute(claim).all()
        if not rows:
            return 0
        cursors = {r.stream: (int(r.dispatched), int(r.attempts), str(r.epoch)) for r in rows}
        events = _pending_events(session, cursors, policy.max_events)
        if not events:
            return 0
        try:
            publisher.publish(events)
        except TransportDown as exc:
            report.transport_down = str(exc)
            log.warning("relay transport down streams=%d events=%d error=%s",
                        len(cursors), len(events), exc)
            return len(rows)
        except PublishRejected as exc:
            _record_failures(session, exc.failed, cursors, policy, now, report)
            events = [e for e in events if e.stream not in exc.failed]
        _advance(session, events)
        report.batches += 1
        report.published += len(events)
        report.streams.update(e.stream for e in events)
        if events:
            log.info("relay batch streams=%d events=%d first=%s:%d last=%s:%d",
                     len({e.stream for e in events}), len(events), events[0].stream,
                     events[0].offset, events[-1].stream, events[-1].offset)
        if on_published is not None and events:
            on_published(events)
        return len(rows)


def _pending_events(
    session: Session, cursors: dict[str, tuple[int, int, str]], limit: int
) -> list[EventRecord]:
    # One cacheable statement whatever the number of streams: the claimed cursors are
    # locked by this transaction, so their `dispatched` is the one read at claim time.
    # Executed on the Connection (Core rows): the ORM's row loading would cost more here
    # than the query itself.
    # The payload is read as text and decoded here (app.core.jsoncodec): the driver's JSON
    # loader is the relay's single largest cost otherwise.
    rows = session.connection().execute(
        select(Event.id, Event.stream, Event.offset, Event.type,
               cast(Event.payload, Text), Event.created_at)
        .join(RelayCursor, RelayCursor.stream == Event.stream)
        .where(RelayCursor.stream.in_(list(cursors)),
               Event.offset > RelayCursor.dispatched,
               Event.offset <= RelayCursor.dispatched + limit)
        .order_by(Event.stream, Event.offset)
    ).all()
    epochs = {name: epoch for name, (_done, _attempts, epoch) in cursors.items()}
    return [
        EventRecord(id_, stream, int(offset), epochs[stream], type_, loads(payload),
                    created_at)
        for id_, stream, offset, type_, payload, created_at in rows
    ]


def _advance(session: Session, events: Sequence[EventRecord]) -> None:
    last: dict[str, int] = {}
    for event in events:
        last[event.stream] = event.offset
    if not last:
        return
    session.execute(
        update(RelayCursor),
        [{"stream": name, "dispatched": offset, "attempts": 0, "last_error": None,
          "next_attempt_at": None} for name, offset in last.items()],
    )


def _record_failures(
    session: Session,
    failed: dict[str, str],
    cursors: dict[str, tuple[int, int, str]],
    policy: RelayPolicy,
    now: datetime,
    report: RelayReport,
) -> None:
    for name, error in failed.items():
        attempts = cursors[name][1] + 1
        values: dict[str, object] = {"attempts": attempts, "last_error": error[:2000]}
        if attempts >= policy.max_attempts:
            values.update(state="failed", failed_at=now, next_attempt_at=None)
            report.failed.append(name)
            log.error("relay stream failed stream=%s attempts=%d error=%s", name, attempts, error)
        else:
            delay = policy.delay(attempts)
            values["next_attempt_at"] = now + timedelta(seconds=delay)
            log.warning("relay publish rejected stream=%s attempt=%d retry_in=%.2fs error=%s",
                        name, attempts, delay, error)
        session.execute(update(RelayCursor).where(RelayCursor.stream == name).values(**values))
        report.rejected[name] = error
