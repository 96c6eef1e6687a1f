"""The relay: claim streams with undispatched events, publish them in offset order, advance.

Only pending streams are looked at: a writer marks its stream pending in the statement
that bumps the head (its row in `pending_streams`, which holds just those, with the head
it set), and the relay deletes the mark once its cursor is at that head (CLEAR_SQL), so a
claim costs what is pending, not how many streams exist, and neither touches an index of
`streams`.

Streams are claimed, not rows (`FOR UPDATE OF relay_cursors SKIP LOCKED`): two relays
work on different streams in parallel and never on one stream at once, so a stream's
events always go out in offset order. The cursor advances in the same transaction that
holds the claim, after the publish succeeded: a crash between the two re-sends the
batch (at least once), never skips it.

On PostgreSQL, with a publisher that takes rows (`RedisPublisher.publish_rows`), a batch
is one statement that claims the streams and reads their pending events together (a
CTE with `FOR UPDATE OF c SKIP LOCKED`), run on the driver's cursor (no ORM, no
SQLAlchemy row objects), the payload left as stored JSON text and the timestamp
formatted by PostgreSQL; then one `UPDATE` advances every cursor (at the row the claim
locked). Each batch's walk of the marks starts after the last mark the previous one
claimed (`Rotation`): a backlog is served in turn. A run stops after a batch that walked
every mark and was not full (fewer streams than `max_streams`, none with `max_events`
events): what it did not see was committed after its claim, and that commit nudges again
(or the sweep sees it).

A batch claims up to `max_streams` streams (100) and sends up to `max_events` (500) of
each. When a batch claimed all it could and found them light (about an event each, as
when a notice goes to every user's stream), the next claims up to `light_streams` (500)
at most `light_events` (10) each: the same bound on a batch's events, with its round
trips and commit paid once for five times the streams. A batch that cut a stream short
makes the next one narrow again, so streams with many events each are still shared by
the relays that run at once (SKIP LOCKED) a hundred at a time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from sqlalchemy import Engine, Text, cast, delete, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import plan_settings, utcnow
from app.core.errors import PublishRejected, TransportDown
from app.core.jsoncodec import loads
from app.outbox.publisher import Publisher, Row
from app.outbox.tables import (
    FAILED_NOT_BEFORE,
    Event,
    EventRecord,
    PendingStream,
    RelayCursor,
)

log = logging.getLogger("herald.relay")


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """How hard the relay tries before a stream waits for an operator."""

    max_attempts: int = 8
    backoff: float = 1.0
    backoff_cap: float = 300.0
    max_streams: int = 100
    max_events: int = 500
    # After a batch of max_streams light streams (about an event each: a notice to many
    # users), the next claims up to light_streams, at most light_events events each.
    light_streams: int = 500
    light_events: int = 10

    def caps(self, light: bool) -> tuple[int, int]:
        """(streams, events of each) a batch may claim and send."""
        return (self.light_streams, self.light_events) if light else \
            (self.max_streams, self.max_events)

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


Hook = Callable[[Sequence[object]], None]  # the batch's events (records or rows)


@dataclass(slots=True)
class Rotation:
    """Where a run's next claim starts. Each claim takes the pending streams it may take
    now in name order (the streams whose wait ended come first, and do not count here);
    a batch that claimed all it could is followed by one that starts after the last name
    it claimed, and a batch that reached the end of the marks without filling up by one
    from the start. So under a backlog larger than a batch every mark is claimed in turn:
    the first names do not take every batch while new marks named before the others keep
    coming (a stream named further on would wait as long as the backlog lasted)."""

    after: str | None = None  # claim after this stream's name (None: from the start)
    last: str | None = None  # the last name the batch claimed in order (None: none)

    def go_on(self, full: bool) -> bool:
        """After a batch: whether the run goes on (and from where)."""
        if full:
            self.after = self.last
            return True
        if self.after is None:  # every mark was walked and a batch was left to spare
            return False
        self.after = None  # the marks before where this batch started: from the start
        return True


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
    """Relay until a batch that walked every mark found less than a full batch pending (or
    the transport is down).

    Every event committed before this call is relayed by it (unless its stream is claimed
    by another relay, which then relays it, or waits for a retry); events committed
    during it may be left to the nudge their commit sends.
    """
    report = RelayReport()
    bind = session_factory.kw.get("bind")
    publish_rows = getattr(publisher, "publish_rows", None)
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql" \
            and bind.dialect.driver == "psycopg" and publish_rows is not None:
        with bind.connect() as conn:
            driver = conn.connection.driver_connection
            try:
                light, rotation = False, Rotation()
                for _ in range(max_batches):
                    full, light = _relay_rows(conn=driver, publish=publish_rows,
                                              policy=policy, caps=policy.caps(light),
                                              streams=streams, clock=clock, report=report,
                                              on_published=on_published, rotation=rotation)
                    if report.transport_down or not rotation.go_on(full):
                        break
            except psycopg.Error:
                # Not through SQLAlchemy, so it would not see a dead connection: discard
                # it (a database restart), the next run connects anew.
                conn.invalidate()
                raise
        return report
    light, rotation = False, Rotation()
    for _ in range(max_batches):
        full, light = _relay_batch(session_factory=session_factory, publisher=publisher,
                                   policy=policy, caps=policy.caps(light), streams=streams,
                                   clock=clock, report=report, on_published=on_published,
                                   rotation=rotation)
        if report.transport_down or not rotation.go_on(full):
            break
    return report


def _shape(claimed: int, sent: Sequence[str], caps: tuple[int, int]) -> tuple[bool, bool]:
    """(full, light) of a batch that claimed `claimed` streams and read events of the
    streams `sent` (one name per event), under `caps`. Full: there may be more (every
    stream it could claim, or a stream's every event it could send). Light: full of
    streams with about an event each, none cut short: the next batch may claim the light
    caps."""
    streams_cap, events_cap = caps
    counts: dict[str, int] = {}
    for stream in sent:
        counts[stream] = counts.get(stream, 0) + 1
    most = max(counts.values(), default=0)
    full = claimed >= streams_cap or most >= events_cap
    light = claimed >= streams_cap and most < events_cap and len(sent) <= 2 * claimed
    return full, light


# Claim up to :max_streams pending streams and read up to :max_events of each, in one
# statement. Only pending streams are looked at (`pending_streams`, whose rows carry the
# epoch too): the claim costs what is pending, not how many streams exist. Each mark's
# cursor is looked up and locked on its own (a LATERAL subquery with its own FOR UPDATE
# SKIP LOCKED, which the planner cannot turn into a join): `pending_streams` is a queue
# whose statistics may count thousands of marks where a hundred are left, and with
# those the planner joined it to `relay_cursors` by walking the cursors' index from its
# first name (a million entries at a million streams, batch after batch: a drain of
# 5,000 events took 8-9 s instead of 0.9 s). The LIMIT stops the walk of the marks as
# soon as enough cursors are locked.
# A pending stream with nothing left to send (its cursor reached the head while a
# writer held the mark) is claimed too, with a row of NULLs (the LEFT JOIN), so that its
# mark gets cleared. Each claimed stream's events are read on their own too (a LATERAL
# subquery with a LIMIT, which the planner cannot flatten into a join): with a plain join,
# once the events table held a long history per stream (430 events each over a thousand
# streams), the planner hashed the claimed streams against a sequential scan of the whole
# table, batch after batch (73 ms a batch instead of 3).
# The marks walked are those a claim may take now, in name order after the mark `after`
# (see `Rotation`), through their own index (`ix_pending_streams_ready`: the marks whose
# `not_before` is not set); before them, the marks whose wait (a backoff) has ended,
# through the index of the waiting marks by the end of their wait. So the marks of
# streams that still wait (on a backoff, or failed: their `not_before`, set with the
# cursor's failure) are neither walked nor looked up: 100,000 failed streams made each
# idle relay() walk all their marks (18 ms; 1.5 ms now). Both walks are ordered scans of
# their index that the LIMIT stops (`_CLAIM_PLAN` rules out the plans that read every
# matching mark first).
# The cursor's state is tested as an expression no index holds (`IS TRUE`), so the lookup
# is by the stream's key whatever the statistics say of states: analysed while every
# stream had failed, they count no active cursor, and the planner walked the state
# index's every active cursor for each mark (495,100 read for a claim of 100, `test_relay`).
# The last column says whether the stream's mark was a ready one (the rotation goes on
# after the last ready stream claimed).
_CLAIM_AND_READ = """
WITH claimed AS (
    SELECT c.stream, c.dispatched, c.attempts, c.tid, p.epoch, p.ready
    FROM ((SELECT name, epoch, false AS ready FROM pending_streams
           WHERE not_before <= %(now)s {only} ORDER BY not_before)
          UNION ALL
          (SELECT name, epoch, true AS ready FROM pending_streams
           WHERE not_before IS NULL AND name > %(after)s {only} ORDER BY name)) AS p
    CROSS JOIN LATERAL (
        SELECT c.stream, c.dispatched, c.attempts, c.ctid AS tid FROM relay_cursors AS c
        WHERE c.stream = p.name AND (c.state = 'active') IS TRUE
          AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= %(now)s)
        FOR UPDATE SKIP LOCKED) AS c
    LIMIT %(max_streams)s
)
SELECT cl.stream, cl.epoch, e.id, e."offset", e.type, e.payload::text,
       to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       cl.attempts, cl.dispatched, cl.tid::text, cl.ready
FROM claimed AS cl
LEFT JOIN LATERAL (
    SELECT e.id, e."offset", e.type, e.payload, e.created_at FROM events AS e
    WHERE e.stream = cl.stream AND e."offset" > cl.dispatched
      AND e."offset" <= cl.dispatched + %(max_events)s
    ORDER BY e."offset" LIMIT %(max_events)s) AS e ON true
ORDER BY cl.stream, e."offset"
"""
_CLAIM_ALL = _CLAIM_AND_READ.format(only="")
_CLAIM_SOME = _CLAIM_AND_READ.format(only="AND name = ANY(%(streams)s)")
# Before the claim, in its transaction: no sequential and no bitmap scans (and no JIT,
# `plan_settings`). Both scans read every mark they match before the LIMIT can stop them,
# and then sort them for the ORDER BY; the planner takes one for the ready marks when its
# statistics count few of them (analysed before a notice to every user marked a million
# streams), and then reads every mark, batch after batch (5,005 marks read for a claim of
# 100 in `test_relay`). Without them the walks are the ordered scans of the two indexes,
# at any count. The rest of the transaction finds rows by name or by address (an index
# or a TID scan) as before.
_CLAIM_PLAN = plan_settings(enable_seqscan="off", enable_bitmapscan="off")
# Losing this transaction in a database crash only re-sends the batch (delivery is at
# least once), so it need not wait for its WAL flush: synchronous_commit off, set in the
# same statement (no extra round trip).
# Each cursor is updated at the row the claim locked (its ctid, a Tid Scan: no second
# walk of `pk_relay_cursors`, at a million streams a random leaf per stream). The claim
# locked the newest version of the row and holds it to the commit, so that version is
# still the newest, and this statement's snapshot (taken after the claim's) sees it.
_ADVANCE = """
WITH sync AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))
UPDATE relay_cursors AS c
SET dispatched = v.dispatched::bigint, attempts = 0, last_error = NULL, next_attempt_at = NULL
FROM ROWS FROM (json_array_elements_text(%(tids)s::json),
               json_array_elements_text(%(offsets)s::json)) AS v(tid, dispatched), sync
WHERE c.ctid = v.tid::tid
"""
# A claimed stream whose cursor is now at the head its mark holds leaves the pending set,
# unless a writer holds the mark (SKIP LOCKED): that writer's update keeps it (with its
# new head), or, if it rolls back, the next claim finds the stream with nothing to send
# and clears it then. A writer's new mark is not in this statement's snapshot, so it is
# not seen; a mark updated by a writer that committed after the snapshot is checked
# again on its newest version (FOR UPDATE in READ COMMITTED), whose head is beyond the
# cursor; the lock held to the commit means no writer can update the mark between this
# check and the delete (its upsert waits, then inserts the mark anew).
# Each mark is looked up by its name and locked in a LATERAL subquery, and deleted by the
# row it locked (its ctid: a Tid Scan), as the claim does, so that the clear costs the
# streams it clears whatever the statistics of the queue say: with the plain join the
# planner hashed the whole of `pending_streams` (a sequential scan of its dead rows too)
# once its statistics counted far more marks than were left. A locked version that the
# statement's snapshot does not see (updated and committed since) is not deleted: the
# mark stays, and a later claim finds nothing to send and clears it.
CLEAR_SQL = """
DELETE FROM pending_streams AS p
USING (SELECT d.tid
       FROM ROWS FROM (json_array_elements_text(%(streams)s::json),
                       json_array_elements_text(%(offsets)s::json)) AS v(name, dispatched)
       CROSS JOIN LATERAL (
         SELECT p2.ctid AS tid FROM pending_streams AS p2
         WHERE p2.name = v.name AND p2.head <= v.dispatched::bigint
         FOR UPDATE SKIP LOCKED) AS d) AS done
WHERE p.ctid = done.tid
"""


# The refused streams of a batch, in one statement: each cursor's failure (`_failure`: a
# retry later, or failed), at the row the claim locked; and each mark's `not_before`,
# until when its stream waits, unless a writer holds the mark (SKIP LOCKED: the relay
# never waits on a writer; the claim then looks up that stream's cursor as for any mark,
# and finds it waiting there).
_REFUSED = """
WITH v AS MATERIALIZED (
  SELECT * FROM json_to_recordset(%(rows)s::json) AS v(
    stream text, tid text, attempts int, last_error text, state text,
    next_attempt_at timestamptz, failed_at timestamptz, not_before timestamptz)),
cur AS (
  UPDATE relay_cursors AS c
  SET attempts = v.attempts, last_error = v.last_error, state = coalesce(v.state, c.state),
      next_attempt_at = v.next_attempt_at, failed_at = coalesce(v.failed_at, c.failed_at)
  FROM v WHERE c.ctid = v.tid::tid)
UPDATE pending_streams AS p SET not_before = m.not_before
FROM (SELECT l.tid, v.not_before FROM v CROSS JOIN LATERAL (
        SELECT p2.ctid AS tid FROM pending_streams AS p2 WHERE p2.name = v.stream
        FOR UPDATE SKIP LOCKED) AS l) AS m
WHERE p.ctid = m.tid
"""


def refused_params(refused: Sequence[tuple[str, str, dict[str, Any]]]) -> dict[str, str]:
    """_REFUSED's parameter: (stream, its cursor's ctid, its `_failure` values) each, as
    JSON rows."""
    rows = []
    for name, tid, values in refused:
        row = {"stream": name, "tid": tid, "not_before": _not_before(values), **values}
        rows.append({k: v.isoformat() if isinstance(v, datetime) else v
                     for k, v in row.items()})
    return {"rows": orjson.dumps(rows).decode()}


def advance_params(tids: list[str], offsets: list[int]) -> dict[str, str]:
    """_ADVANCE's parameters: each cursor's row (its ctid, as the claim read it) and its
    new offset, as JSON arrays (a tenth of the time psycopg takes to send lists of 500 as
    arrays)."""
    return {"tids": orjson.dumps(tids).decode(), "offsets": orjson.dumps(offsets).decode()}


def clear_params(done: dict[str, int]) -> dict[str, str]:
    """CLEAR_SQL's parameters: each stream and the offset its cursor reached, as JSON."""
    return {"streams": orjson.dumps(list(done)).decode(),
            "offsets": orjson.dumps(list(done.values())).decode()}


def _pipeline(conn: Any) -> Any:
    return conn.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()


def _relay_rows(
    *,
    conn: Any,
    publish: Callable[[Sequence[Row]], None],
    policy: RelayPolicy,
    caps: tuple[int, int],
    streams: Sequence[str] | None,
    clock: Callable[[], datetime],
    report: RelayReport,
    on_published: Hook | None,
    rotation: Rotation | None = None,
) -> tuple[bool, bool]:
    """One batch on PostgreSQL, on the driver's connection (psycopg): claim and read,
    publish, advance, commit. In pipeline mode BEGIN goes out with the claim. The COMMIT
    is sent only once the advance has come back: a relay that dies while advancing
    (a kill, a crash) leaves a transaction that PostgreSQL rolls back, and the batch is
    sent again (at least once). (full, light): `_shape`."""
    pipeline = _pipeline(conn)
    rows: list[Row] = []
    last: dict[str, int] = {}
    try:
        now = clock()
        cursor = conn.cursor()
        after = rotation.after if rotation is not None else None
        # No name is before '' (the claim compares names in the database's collation).
        params: dict[str, object] = {"now": now, "max_streams": caps[0],
                                     "max_events": caps[1], "after": after or ""}
        if streams is not None:
            params["streams"] = list(streams)
        with pipeline:
            cursor.execute(_CLAIM_PLAN)
            cursor.execute(_CLAIM_SOME if streams is not None else _CLAIM_ALL, params)
            fetched = cursor.fetchall()
        attempts: dict[str, int] = {}
        done: dict[str, int] = {}  # claimed stream -> its cursor after this batch
        tids: dict[str, str] = {}  # claimed stream -> the row of its cursor
        furthest: str | None = None  # the last ready stream claimed, in the claim's order
        for (stream, epoch, id_, offset, type_, payload, ts, tries, dispatched, tid,
             ready) in fetched:
            if ready:
                furthest = stream
            attempts[stream] = tries
            tids[stream] = tid
            done[stream] = dispatched
            if id_ is not None:
                rows.append(Row(stream, epoch, id_, offset, type_, payload, ts))
        if rotation is not None:
            rotation.last = furthest
        if not rows:
            cleared = 0
            if done:
                cursor.execute(CLEAR_SQL, clear_params(done))
                cleared = cursor.rowcount
            conn.commit()
            full, light = _shape(len(attempts), [], caps)
            return full and cleared > 0, light
        full, light = _shape(len(attempts), [row.stream for row in rows], caps)
        try:
            publish(rows)
        except TransportDown as exc:
            report.transport_down = str(exc)
            log.warning("relay transport down streams=%d events=%d error=%s",
                        len(attempts), len(rows), exc)
            conn.rollback()
            return full, light
        except PublishRejected as exc:
            refused = [(name, tids[name],
                        _failure(name, error, attempts[name] + 1, policy, now, report))
                       for name, error in exc.failed.items()]
            cursor.execute(_REFUSED, refused_params(refused))
            rows = [r for r in rows if r.stream not in exc.failed]
        for row in rows:
            last[row.stream] = row.offset
        done.update(last)
        with _pipeline(conn):
            if last:
                cursor.execute(_ADVANCE, advance_params([tids[stream] for stream in last],
                                                        list(last.values())))
            cursor.execute(CLEAR_SQL, clear_params(done))
        conn.commit()
    except BaseException:
        if not conn.closed:
            with suppress(Exception):
                conn.rollback()
        raise
    report.batches += 1
    report.published += len(rows)
    report.streams.update(last)
    if rows:
        log.info("relay batch streams=%d events=%d first=%s:%d last=%s:%d",
                 len(last), len(rows), rows[0].stream, rows[0].offset,
                 rows[-1].stream, rows[-1].offset)
        if on_published is not None:
            on_published(rows)
    return full, light


def _relay_batch(
    *,
    session_factory: sessionmaker[Session],
    publisher: Publisher,
    policy: RelayPolicy,
    caps: tuple[int, int],
    streams: Sequence[str] | None,
    clock: Callable[[], datetime],
    report: RelayReport,
    on_published: Hook | None,
    rotation: Rotation | None = None,
) -> tuple[bool, bool]:
    """One batch through the ORM session (SQLite, or a publisher of records only).
    (full, light): `_shape`."""
    with session_factory() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # Losing this transaction in a database crash only re-sends the batch (delivery
            # is at least once), so it need not wait for its WAL flush.
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        now = clock()
        claim = (
            select(RelayCursor.stream, RelayCursor.dispatched, RelayCursor.attempts,
                   PendingStream.epoch)
            .join(PendingStream, PendingStream.name == RelayCursor.stream)
            .where(
                RelayCursor.state == "active",
                or_(RelayCursor.next_attempt_at.is_(None), RelayCursor.next_attempt_at <= now),
            )
            .order_by(PendingStream.name)
            .limit(caps[0])
            .with_for_update(of=RelayCursor, skip_locked=True)
        )
        if streams is not None:
            claim = claim.where(RelayCursor.stream.in_(list(streams)))
        if rotation is not None and rotation.after is not None:
            claim = claim.where(PendingStream.name > rotation.after)
        claim = claim.where(or_(PendingStream.not_before.is_(None),
                                PendingStream.not_before <= now))
        rows = session.execute(claim).all()
        if rotation is not None:
            rotation.last = max((r.stream for r in rows), default=None)
        if not rows:
            return False, False
        cursors = {r.stream: (int(r.dispatched), int(r.attempts), str(r.epoch)) for r in rows}
        events = _pending_events(session, cursors, caps[1])
        if not events:
            cleared = _clear(session, {name: c[0] for name, c in cursors.items()})
            full, light = _shape(len(rows), [], caps)
            return full and cleared > 0, light
        full, light = _shape(len(rows), [event.stream for event in events], caps)
        try:
            publisher.publish(events)
        except TransportDown as exc:
            report.transport_down = str(exc)
            log.warning("relay transport down streams=%d events=%d error=%s",
                        len(cursors), len(events), exc)
            return full, light
        except PublishRejected as exc:
            _record_failures(session, exc.failed, cursors, policy, now, report)
            events = [e for e in events if e.stream not in exc.failed]
        done = {name: c[0] for name, c in cursors.items()}
        done.update(_advance(session, events))
        _clear(session, done)
        report.batches += 1
        report.published += len(events)
        report.streams.update(e.stream for e in events)
        if events:
            log.info("relay batch streams=%d events=%d first=%s:%d last=%s:%d",
                     len({e.stream for e in events}), len(events), events[0].stream,
                     events[0].offset, events[-1].stream, events[-1].offset)
        if on_published is not None and events:
            on_published(events)
        return full, light


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


def _advance(session: Session, events: Sequence[EventRecord]) -> dict[str, int]:
    last: dict[str, int] = {}
    for event in events:
        last[event.stream] = event.offset
    if not last:
        return last
    session.execute(
        update(RelayCursor),
        [{"stream": name, "dispatched": offset, "attempts": 0, "last_error": None,
          "next_attempt_at": None} for name, offset in last.items()],
    )
    return last


def _clear(session: Session, done: dict[str, int]) -> int:
    """CLEAR_SQL through the session: on PostgreSQL as is (SKIP LOCKED); on SQLite, whose
    writers are serialised by the database lock, a plain conditional DELETE. Returns how
    many streams left the pending set."""
    if not done:
        return 0
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        result = conn.exec_driver_sql(CLEAR_SQL, clear_params(done))
        return int(result.rowcount or 0)
    cleared = 0
    for name, offset in done.items():
        result = conn.execute(delete(PendingStream).where(PendingStream.name == name,
                                                          PendingStream.head <= offset))
        cleared += int(getattr(result, "rowcount", 0) or 0)
    return cleared


def _record_failures(
    session: Session,
    failed: dict[str, str],
    cursors: dict[str, tuple[int, int, str]],
    policy: RelayPolicy,
    now: datetime,
    report: RelayReport,
) -> None:
    for name, error in failed.items():
        values = _failure(name, error, cursors[name][1] + 1, policy, now, report)
        session.execute(update(RelayCursor).where(RelayCursor.stream == name).values(**values))
        session.execute(update(PendingStream).where(PendingStream.name == name)
                        .values(not_before=_not_before(values)))


def _not_before(values: dict[str, Any]) -> Any:
    """A refused stream's mark's `not_before`, from its cursor's new values (`_failure`)."""
    return FAILED_NOT_BEFORE if values.get("state") == "failed" else values["next_attempt_at"]


def _failure(name: str, error: str, attempts: int, policy: RelayPolicy, now: datetime,
             report: RelayReport) -> dict[str, Any]:
    """A refused stream's new cursor values: a retry later, or failed after max_attempts."""
    values: dict[str, Any] = {"attempts": attempts, "last_error": error[:2000]}
    if attempts >= policy.max_attempts:
        values.update(state="failed", failed_at=now, next_attempt_at=None)
        report.failed.append(name)
        log.error("relay stream failed stream=%s attempts=%d error=%s", name, attempts, error)
    else:
        delay = policy.delay(attempts)
        values["next_attempt_at"] = now + timedelta(seconds=delay)
        log.warning("relay publish rejected stream=%s attempt=%d retry_in=%.2fs error=%s",
                    name, attempts, delay, error)
    report.rejected[name] = error
    return values
