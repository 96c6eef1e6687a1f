"""Retention: old, delivered events go; heads, epochs and undelivered events stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from app.core.db import utcnow
from app.core.errors import Gone
from app.outbox.replay import Head, page, read_head
from app.outbox.retention import _prune_chunk, prune_events
from app.outbox.tables import Event, IdempotencyKey, RelayCursor, Stream
from app.outbox.writer import append
from testkit.databases import Database
from testkit.eventually import eventually
from testkit.system import System
from workers.celery_app import celery_app

OLD = timedelta(days=30)


def fill(db: Database, stream: str, count: int, *, age: timedelta | None = None,
         dispatched: bool = True) -> None:
    with db.factory() as session, session.begin():
        for i in range(count):
            append(session, stream, "notification", {"type": "info", "title": str(i),
                                                     "message": ""})
    with db.factory() as session, session.begin():
        if age is not None:
            session.execute(update(Event).where(Event.stream == stream)
                            .values(created_at=utcnow() - age))
        if dispatched:
            head = session.get(Stream, stream)
            assert head is not None
            session.execute(update(RelayCursor).where(RelayCursor.stream == stream)
                            .values(dispatched=head.head))


def offsets_of(db: Database, stream: str) -> list[int]:
    with db.factory() as session:
        return list(session.execute(select(Event.offset).where(Event.stream == stream)
                                    .order_by(Event.offset)).scalars())


def head(db: Database, stream: str) -> Head:
    with db.factory() as session, session.begin():
        return read_head(session, stream)


def test_prune_drops_old_delivered_events_and_keeps_head_and_epoch(db: Database) -> None:
    fill(db, "project-1", 4, age=OLD)
    fill(db, "project-1", 2)  # recent
    before = head(db, "project-1")
    assert prune_events(db.factory, retention=timedelta(days=7)) == 4
    after = head(db, "project-1")
    assert offsets_of(db, "project-1") == [5, 6]
    assert (after.offset, after.epoch, after.pruned_through) == (6, before.epoch, 4)
    assert not after.can_recover(3, after.epoch) and after.can_recover(4, after.epoch)
    with db.factory() as session, session.begin():  # new events continue the same offsets
        assert append(session, "project-1", "notification",
                      {"type": "info", "title": "", "message": ""}).offset == 7


def test_prune_never_drops_an_undelivered_event(db: Database) -> None:
    fill(db, "ticket-1", 3, age=OLD, dispatched=False)
    fill(db, "ticket-2", 3, age=OLD)
    fill(db, "ticket-3", 3, age=OLD, dispatched=False)
    with db.factory() as session, session.begin():  # ticket-3: only the first one went out
        session.execute(update(RelayCursor).where(RelayCursor.stream == "ticket-3")
                        .values(dispatched=1))
    assert prune_events(db.factory, retention=timedelta(days=7)) == 4
    assert offsets_of(db, "ticket-1") == [1, 2, 3]
    assert offsets_of(db, "ticket-2") == []
    assert offsets_of(db, "ticket-3") == [2, 3]


def test_prune_covers_every_stream_in_bounded_batches_and_chunks(db: Database) -> None:
    streams = [f"user-{i}" for i in range(1, 8)]
    for stream in streams:
        fill(db, stream, 5, age=OLD)
    assert prune_events(db.factory, retention=timedelta(days=7), chunk=2) == 35
    with db.factory() as session:
        assert session.execute(select(func.count()).select_from(Event)).scalar() == 0
        assert set(session.execute(select(Stream.pruned_through)).scalars()) == {5}
    assert prune_events(db.factory, retention=timedelta(days=7)) == 0  # idempotent


def test_a_chunk_reads_each_streams_old_events_by_its_index_even_with_long_histories(
        pg_db: Database) -> None:
    """Streams with a long history (here 300 events each, 60,000 in all, analysed): a
    chunk prunes each stream's oldest events along `uq_events_stream_offset`. With a plain
    join the planner hashed the chunk against a sequential scan of the whole events table,
    chunk after chunk (at 675,000 events, 150-260 ms a chunk instead of 60)."""
    with pg_db.engine.begin() as conn:
        conn.execute(text("INSERT INTO streams (name, epoch, head, pruned_through, created_at) "
                          "SELECT 'project-' || g, 'e', 300, 0, now() "
                          "FROM generate_series(1, 200) AS g"))
        conn.execute(text("INSERT INTO relay_cursors (stream, dispatched, state, attempts) "
                          "SELECT 'project-' || g, 300, 'active', 0 "
                          "FROM generate_series(1, 200) AS g"))
        conn.execute(text('INSERT INTO events (id, stream, "offset", type, payload, created_at) '
                          "SELECT gen_random_uuid()::text, 'project-' || g, k, 't', '{}', now() "
                          "FROM generate_series(1, 200) AS g, generate_series(1, 300) AS k"))
    pg_db.analyse()
    scans = text("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'events'")
    with pg_db.factory() as session, session.begin():
        before = session.execute(scans).scalar()
        deleted, streams = _prune_chunk(session, {f"project-{g}": 5 for g in range(1, 201)})
        after = session.execute(scans).scalar()
    assert (deleted, streams) == (200 * 5, 200)
    assert after == before, f"{after - before} sequential scans of the events"
    with pg_db.factory() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 200 * 295


def test_page_after_pruning_is_gone_and_after_the_pruned_offset_serves(db: Database) -> None:
    fill(db, "admins", 3, age=OLD)
    fill(db, "admins", 1)
    prune_events(db.factory, retention=timedelta(days=7))
    with db.factory() as session, session.begin():
        events, now = page(session, "admins", 3, 10)
    assert [e.offset for e in events] == [4] and now.pruned_through == 3
    with db.factory() as session, session.begin(), pytest.raises(Gone):
        page(session, "admins", 2, 10)


def test_prune_runs_as_the_daily_beat_task_on_a_real_worker(pg_system: System) -> None:
    assert celery_app.conf.beat_schedule["prune"]["task"] == "herald.prune"
    assert celery_app.conf.beat_schedule["prune"]["schedule"] == 24 * 3600.0
    with pg_system.factory() as session, session.begin():
        for i in range(3):
            append(session, "clients", "notification", {"type": "info", "title": str(i),
                                                         "message": ""})
    def relayed() -> bool:  # the sweep relays them first: only delivered events may go
        with pg_system.factory() as session:
            done = session.get(RelayCursor, "clients")
            return done is not None and done.dispatched == 3

    eventually(relayed, "the three events were not relayed", 30)
    with pg_system.factory() as session, session.begin():
        session.execute(text("UPDATE events SET created_at = :old WHERE \"offset\" <= 2"),
                        {"old": utcnow() - OLD})
    celery_app.send_task("herald.prune")
    left: list[int] = []

    def pruned_through_2() -> Stream | None:
        with pg_system.factory() as session:
            left[:] = session.execute(select(Event.offset)).scalars()
            stream = session.get(Stream, "clients")
        return stream if left == [3] else None

    pruned = eventually(pruned_through_2, lambda: f"left: {left}", 30)
    assert pruned is not None and pruned.pruned_through == 2 and pruned.head == 3


def test_prune_forgets_idempotency_keys_older_than_retention(db: Database) -> None:
    """The idempotency window is the retention period: older keys may be used again."""
    from app.outbox.publish import publish

    for key in ("old", "new"):
        with db.factory() as session, session.begin():
            publish(session, "admins", "notification",
                    {"type": "info", "title": key, "message": ""},
                    idempotency_key=key, service="billing")
    with db.factory() as session, session.begin():
        session.execute(update(IdempotencyKey).where(IdempotencyKey.key == "old")
                        .values(created_at=utcnow() - OLD))
    prune_events(db.factory, retention=timedelta(days=7))
    with db.factory() as session:
        assert list(session.scalars(select(IdempotencyKey.key))) == ["new"]
