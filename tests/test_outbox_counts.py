"""The outbox's counted totals (app.outbox.counts) and the status built on them equal a full
recount of the tables in the same snapshot, whoever changes them and however many at once;
and the status looks up about the streams it lists, not every pending one."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, text, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import PublishRejected
from app.outbox import counts, ops
from app.outbox.ops.common import aware
from app.outbox.publish import EventSpec, publish_many
from app.outbox.publisher import Row
from app.outbox.relay import RelayPolicy, relay
from app.outbox.retention import prune_events
from app.outbox.tables import Event, EventRecord, PendingStream, RelayCursor, Stream
from app.outbox.writer import append
from testkit.databases import Database
from testkit.eventually import eventually
from testkit.marks import unmark
from testkit.ops import LookedUp

NOTE = {"type": "info", "title": "x", "message": ""}


@dataclass(frozen=True)
class Recount:
    totals: counts.Totals
    events_pending: int
    streams_behind: int  # head > dispatched
    oldest: datetime | None
    listed: list[str]  # failed first (longest failed first), then the oldest first pending
    # event, then name


def recount(session: Session, limit: int) -> Recount:
    """Everything the status says, counted the slow way: every stream read."""
    rows = session.execute(
        select(Stream.name, Stream.head, PendingStream.name.is_not(None).label("pending"),
               RelayCursor.dispatched, RelayCursor.state, RelayCursor.attempts,
               RelayCursor.failed_at, Event.created_at)
        .join(RelayCursor, RelayCursor.stream == Stream.name)
        .outerjoin(PendingStream, PendingStream.name == Stream.name)
        .outerjoin(Event, and_(Event.stream == Stream.name,
                               Event.offset == RelayCursor.dispatched + 1))).all()
    far = datetime.max.replace(tzinfo=UTC)
    behind = [r for r in rows if r.head > r.dispatched]
    listed = sorted((r for r in rows if r.pending and (r.head > r.dispatched
                                                        or r.state == "failed")),
                    key=lambda r: (0, aware(r.failed_at) or far, r.name) if r.state == "failed"
                    else (1, aware(r.created_at) or far, r.name))
    return Recount(
        totals=counts.Totals(
            appended=sum(r.head for r in rows), dispatched=sum(r.dispatched for r in rows),
            marked=sum(1 for r in rows if r.pending),
            failed=sum(1 for r in rows if r.state == "failed"),
            retrying=sum(1 for r in rows if r.state == "active" and r.attempts > 0)),
        events_pending=sum(r.head - r.dispatched for r in behind),
        streams_behind=len(behind),
        oldest=min((o for o in (aware(r.created_at) for r in behind) if o), default=None),
        listed=[r.name for r in listed[:limit]])


def compare(database: Database, limit: int = 10) -> tuple[ops.Status, Recount]:
    """The status and a recount in one snapshot (REPEATABLE READ on PostgreSQL; SQLite's
    read transaction is one snapshot)."""
    now = utcnow()
    with database.engine.connect() as conn:
        if database.is_postgres:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with Session(bind=conn) as session:
            state = ops.status(session, now=now, limit=limit)
            totals = counts.read(session)
            slow = recount(session, limit)
    assert totals == slow.totals
    assert state.events_pending == slow.events_pending == totals.pending
    assert (state.failed_streams, state.retrying_streams) == (totals.failed, totals.retrying)
    assert state.streams_behind == totals.marked >= slow.streams_behind
    expected_age = None if slow.oldest is None else \
        round(max(0.0, (now - slow.oldest).total_seconds()), 3)
    assert state.oldest_pending_age == expected_age
    assert [s.stream for s in state.streams] == slow.listed
    return state, slow


class GaveUp(Exception):
    """A writer that rolls its transaction back."""


class Flaky:
    """A publisher that refuses some streams for a while, and sometimes dies mid-batch
    (the relay's transaction then rolls back, as if its process had been killed)."""

    def __init__(self, seed: int, bad: set[str], healed: threading.Event,
                 chaos: float = 0.05) -> None:
        self.rng = random.Random(seed)
        self.bad = bad
        self.healed = healed
        self.chaos = chaos  # how often a batch dies, and a stream is refused at random

    def publish_rows(self, rows: Sequence[Row]) -> None:
        if self.rng.random() < self.chaos:
            raise RuntimeError("killed mid-batch")
        streams = {row.stream for row in rows}
        refused = {s: "flaky" for s in streams if (s in self.bad and not self.healed.is_set())
                   or self.rng.random() < self.chaos}
        if refused:
            raise PublishRejected("flaky", failed=refused)

    def publish(self, events: Sequence[EventRecord]) -> None:
        self.publish_rows([Row(e.stream, e.epoch, e.id, e.offset, e.type, "{}", "")
                           for e in events])

    def close(self) -> None:
        pass


def _loop(stop: threading.Event, errors: list[str], step: Any) -> None:
    while not stop.is_set():
        try:
            step()
        except RuntimeError as exc:
            if "killed mid-batch" not in str(exc):
                errors.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # reported below
            errors.append(f"{type(exc).__name__}: {exc}")


def test_counts_and_status_equal_a_full_recount_under_concurrent_writers_relays_retries_failures_and_pruning(  # noqa: E501
        pg_db: Database) -> None:
    policy = RelayPolicy(max_attempts=2, backoff=0.01, backoff_cap=0.02, max_streams=7,
                         max_events=5)
    healed = threading.Event()
    stop = threading.Event()
    errors: list[str] = []
    rng = random.Random(7)

    def write(seed: int) -> Any:
        wrng = random.Random(seed)

        def step() -> None:
            names = [f"user-{wrng.randint(1, 60)}" for _ in range(wrng.randint(1, 20))]
            try:
                with pg_db.factory() as session, session.begin():
                    publish_many(session, [EventSpec(n, "notification", NOTE) for n in names])
                    if wrng.random() < 0.2:
                        raise GaveUp  # rolled back: nothing counted
            except GaveUp:
                pass
        return step

    def relay_step(seed: int) -> Any:
        publisher = Flaky(seed, {"user-3", "user-7"}, healed)
        return lambda: relay(session_factory=pg_db.factory, publisher=publisher,
                             policy=policy)

    def prune_step() -> None:
        prune_events(pg_db.factory, retention=timedelta(0), chunk=50)

    def retry_step() -> None:
        ops.retry(pg_db.factory, all_failed=True)

    def fold_step() -> None:
        counts.fold_on(pg_db.engine)

    steps = [write(1), write(2), write(3), relay_step(4), relay_step(5), prune_step,
             retry_step, fold_step]
    threads = [threading.Thread(target=_loop, args=(stop, errors, s)) for s in steps]
    compared = 0
    try:
        for t in threads:
            t.start()
        def compared_enough() -> bool:  # each comparison while everything runs at once
            nonlocal compared
            _state, slow = compare(pg_db, limit=rng.choice([0, 3, 10]))
            compared += 1
            return compared >= 30 and slow.totals.appended > 300

        eventually(compared_enough, lambda: f"{compared} comparisons", timeout=120,
                   interval=0)
        healed.set()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    ops.retry(pg_db.factory, all_failed=True)
    quiet = Flaky(9, set(), healed, chaos=0)

    def drained() -> bool:
        relay(session_factory=pg_db.factory, publisher=quiet,
              policy=RelayPolicy(backoff=0.01, backoff_cap=0.01))
        return compare(pg_db)[1].events_pending == 0

    eventually(drained, "every event relayed", timeout=60)
    state, slow = compare(pg_db)
    assert compared > 20 and slow.totals.appended > 300
    assert state.streams_behind == 0 and state.oldest_pending_age is None


def test_counts_follow_every_kind_of_change_on_both_databases(db: Database) -> None:
    """Inserts, bumps, cursor moves, failures, retries, marks cleared, a stream deleted:
    the totals equal the recount after each, and a fold changes no total."""
    for i in range(3):
        with db.factory() as session, session.begin():
            append(session, f"user-{i + 1}", "notification", NOTE)
            append(session, "user-1", "notification", NOTE)
    compare(db)
    with db.factory() as session, session.begin():
        session.execute(update(RelayCursor).where(RelayCursor.stream == "user-2").values(
            attempts=1, next_attempt_at=utcnow()))
        session.execute(update(RelayCursor).where(RelayCursor.stream == "user-3").values(
            attempts=3, state="failed", failed_at=utcnow(), last_error="boom"))
    state, _ = compare(db)
    assert (state.failed_streams, state.retrying_streams, state.events_pending) == (1, 1, 6)
    relay(session_factory=db.factory,
          publisher=Flaky(1, {"user-1"}, threading.Event(), chaos=0),
          policy=RelayPolicy(max_attempts=5, backoff=60))
    compare(db)
    ops.retry(db.factory, all_failed=True)
    compare(db)
    with db.factory() as session, session.begin():
        unmark(session, "user-2")
        for table, column in (("events", "stream"), ("relay_cursors", "stream"),
                              ("streams", "name")):
            session.execute(text(f"DELETE FROM {table} WHERE {column} = 'user-3'"))
    compare(db)
    with db.engine.begin() as conn:
        before = counts.read(Session(bind=conn))
        counts.fold(conn)
    with db.factory() as session:
        assert counts.read(session) == before
        assert session.scalar(text("SELECT count(*) FROM outbox_counts")) == 1


def test_status_looks_up_about_the_listed_streams_not_every_pending_one(pg_db: Database) -> None:
    """2,000 pending streams written at 40 different times: the status answers from the
    counts and from the first pages of the pending streams in `since` order."""
    base = utcnow() - timedelta(minutes=5)
    for batch in range(40):
        with pg_db.factory() as session, session.begin():
            publish_many(session, [EventSpec(f"user-{batch * 50 + i + 1}", "notification", NOTE)
                                   for i in range(50)])
            session.execute(text(  # these events were written `batch` seconds after base
                "UPDATE events SET created_at = :at WHERE stream = ANY(:names)"),
                {"at": base + timedelta(seconds=batch),
                 "names": [f"user-{batch * 50 + i + 1}" for i in range(50)]})
            session.execute(text("UPDATE pending_streams SET since = :at "
                                 "WHERE name = ANY(:names)"),
                            {"at": base + timedelta(seconds=batch),
                             "names": [f"user-{batch * 50 + i + 1}" for i in range(50)]})
    with LookedUp(pg_db.engine) as looked_up, pg_db.factory() as session:
        state = ops.status(session, limit=100)
    assert state.events_pending == 2000 and len(state.streams) == 100
    assert state.streams[0].stream == "user-1"
    assert looked_up.rows <= 2 * 116  # a page or two of the walk, of 2,000 pending streams
    compare(pg_db, limit=100)  # and exactly what a full recount lists
