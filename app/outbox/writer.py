"""Append events inside the caller's transaction, with gapless per-stream offsets.

Offsets come from `UPDATE streams SET head = head + 1 ... RETURNING`, which locks the
stream's row until the transaction ends: appends to one stream serialise and commit in
offset order, appends to different streams never wait on each other. The same statement
marks the stream pending for the relay: it adds the stream's row to `pending_streams`
with the new head, or updates it (keeping `since`, the earliest time of the events
written since the mark, for the outbox status). The relay is nudged after the commit,
never before, and a failed nudge never fails the caller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, case, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.core.db import NUDGER, utcnow
from app.core.errors import InvalidInput, TooLarge
from app.outbox.ids import event_ids as new_event_ids
from app.outbox.streams import parse_stream, validate_type
from app.outbox.tables import (
    Event,
    EventRecord,
    PendingStream,
    RelayCursor,
    Stream,
    new_epoch,
)

log = logging.getLogger("herald.outbox")

MAX_DATA_BYTES = 64 * 1024
MAX_DATA_DEPTH = 32  # levels of objects and arrays: deeper JSON cannot be delivered or paged
Nudger = Callable[[list[str]], None]
_PENDING = "herald.nudge_streams"


def insert_or_skip(session: Session, table: Any, values: dict[str, Any]) -> bool:
    """INSERT unless the primary key exists (ON CONFLICT DO NOTHING); True if inserted.

    The one place that knows dialects: PostgreSQL and SQLite say ON CONFLICT DO NOTHING;
    on PostgreSQL a concurrent uncommitted insert of the same key makes this wait.
    """
    dialect = session.get_bind().dialect.name
    key_columns = list(table.__table__.primary_key.columns)
    if dialect in ("postgresql", "sqlite"):
        make = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = make(table).values(**values).on_conflict_do_nothing()
        return session.execute(stmt.returning(*key_columns)).first() is not None
    # other dialects (not supported in production): check, then insert
    key = tuple(values[c.name] for c in key_columns)
    if session.get(table, key if len(key) > 1 else key[0]) is not None:  # pragma: no cover
        return False
    session.execute(insert(table).values(**values))  # pragma: no cover
    return True  # pragma: no cover


def ensure_stream(session: Session, name: str) -> None:
    """Create the stream (and its relay cursor) if it does not exist; never blocks on writers."""
    insert_or_skip(session, Stream, {"name": name, "epoch": new_epoch(), "head": 0,
                                     "pruned_through": 0, "created_at": utcnow()})
    insert_or_skip(session, RelayCursor, {"stream": name, "dispatched": 0, "state": "active",
                                          "attempts": 0})


def encode_data(data: Any) -> str:
    """`data` checked (a JSON object, at most MAX_DATA_DEPTH levels, at most MAX_DATA_BYTES
    as JSON) and encoded once, compact: the text the outbox stores."""
    if not isinstance(data, dict):
        raise InvalidInput("data must be a JSON object", code="invalid_data")
    if not _flat(data) and depth_over(data, MAX_DATA_DEPTH):
        raise InvalidInput(f"data nests more than {MAX_DATA_DEPTH} levels",
                           code="invalid_data")
    try:
        text = _encode_checked(data)
        size = len(text) if text.isascii() else len(text.encode())
    except (TypeError, ValueError) as exc:  # not JSON, or a lone surrogate (not UTF-8)
        raise InvalidInput(f"data is not JSON: {exc}", code="invalid_data") from None
    if size > MAX_DATA_BYTES:
        raise TooLarge(f"data is over {MAX_DATA_BYTES} bytes as JSON", code="too_large")
    return text


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_json_list = json.JSONEncoder(separators=(",", ":")).encode


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _one_encoder() -> Callable[[Any], str]:
    """`_encode` for data whose depth was checked: the standard library's C encoder made
    once, not per call (`JSONEncoder.encode` builds one each time: most of its cost for a
    small object). Same arguments as `_encode` (compact, not ASCII-only, NaN written as
    NaN), so the same text; no check for cycles, which `depth_over` refused already."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover  # a Python without the json accelerator
        return _encode
    chunks = make(None, _not_json, json.encoder.encode_basestring, None, ":", ",", False,
                  False, True)
    return lambda data: "".join(chunks(data, 0))


_encode_checked = _one_encoder()


def _flat(data: dict[str, Any]) -> bool:
    """True if no value of `data` is an object or an array (one level: nothing to walk)."""
    return not any(isinstance(value, dict | list) for value in data.values())


def encoded_size(data: Any) -> int:
    try:
        return len(_encode(data).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"data is not JSON: {exc}", code="invalid_data") from None


def depth_over(data: Any, limit: int) -> bool:
    """True if `data` nests objects/arrays more than `limit` levels (no recursion)."""
    level: list[Any] = [data]
    for _ in range(limit):
        level = [child for item in level if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return False
    return any(isinstance(item, dict | list) for item in level)


def check_data(data: Any) -> dict[str, Any]:
    encode_data(data)
    return data  # type: ignore[no-any-return]


def append(
    session: Session,
    stream: str,
    type: str,
    data: dict[str, Any],
    *,
    nudge: Nudger | None = None,
) -> EventRecord:
    """Append one event to `stream` in the session's current transaction.

    The caller commits (or rolls back: then no event and no offset is used up).
    After a successful commit the relay is nudged with the touched streams: `nudge` if
    given, else the nudger of the session factory (`make_session_factory(nudge=...)`),
    else nobody (the workers' sweep relays it).
    """
    parse_stream(stream)
    validate_type(type)
    payload = encode_data(data)
    [record] = append_rows(session, [(stream, type, data)], payloads=[payload], nudge=nudge)
    return record


Row = tuple[str, str, dict[str, Any]]  # (stream, type, data), already validated

def _mark(rows: str) -> str:
    """The CTE `mark` of the append statements: adds each stream of `rows` (name, head,
    epoch) to `pending_streams` with its new head, or updates its mark (the new head; the
    earliest `since`, an unknown one staying unknown)."""
    return f"""mark AS (
  INSERT INTO pending_streams AS p (name, head, epoch, since)
  SELECT name, head, epoch, %(ts)s FROM {rows}
  ON CONFLICT (name) DO UPDATE SET head = excluded.head,
    since = CASE WHEN excluded.since < p.since THEN excluded.since ELSE p.since END),
"""


# PostgreSQL: one stream's head bump and its events' insert in one statement (one round
# trip). The UPDATE locks the stream's row until the transaction ends, as a bare UPDATE
# would; a missing stream bumps nothing and inserts nothing (no row comes back). The ids,
# types and payloads go as three JSON arrays (the payloads are JSON already: joined, not
# encoded again), zipped by ROWS FROM in order.
APPEND_SQL = """\
WITH bump AS (
  UPDATE streams SET head = head + %(n)s WHERE name = %(stream)s
  RETURNING name, head, epoch),
{mark}ins AS (
  INSERT INTO events (id, stream, "offset", type, payload, created_at)
  SELECT r.id, %(stream)s, bump.head - %(n)s + r.ord, r.type, r.payload, %(ts)s
  FROM bump, ROWS FROM (json_array_elements_text(%(ids)s::json),
                        json_array_elements_text(%(types)s::json),
                        json_array_elements(%(payloads)s::json))
             WITH ORDINALITY AS r(id, type, payload, ord))
SELECT bump.head, bump.epoch FROM bump""".format(mark=_mark("bump"))


def append_rows(session: Session, rows: Sequence[Row], *, ids: Sequence[str] | None = None,
                payloads: Sequence[str] | None = None,
                nudge: Nudger | None = None) -> list[EventRecord]:
    """The one append path. On PostgreSQL, events of several streams go in one statement
    (APPEND_MANY_SQL: set-based, whatever the number of streams, new or not), those of
    one stream in APPEND_SQL; elsewhere (SQLite) per stream in name order an UPDATE of
    the head and a multi-row INSERT.

    `rows` must be valid (`append` and `publish.validate` check them); `payloads`, if
    given, are their data as `encode_data` encoded it. Events of one stream get
    consecutive offsets in list order. A missing stream is created. Core statements on
    the session's connection: no ORM objects.
    """
    if not rows:
        return []
    now = utcnow()
    texts = list(payloads) if payloads is not None else [_encode(d) for _s, _t, d in rows]
    event_ids = list(ids) if ids is not None else new_event_ids(len(rows))
    by_stream: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_stream.setdefault(row[0], []).append(i)
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    records: list[EventRecord | None] = [None] * len(rows)
    if postgres and len(by_stream) > 1:
        for stream, head_row in _append_many_pg(conn, rows, by_stream, event_ids, texts, now):
            at = by_stream[stream]
            for i, record in zip(at, _records(stream, head_row, rows, at, event_ids, now),
                                 strict=True):
                records[i] = record
            schedule_nudge(session, stream, nudge)
        return records  # type: ignore[return-value]  # every index was filled
    for stream in sorted(by_stream):
        at = by_stream[stream]
        if postgres:
            head_row = _append_pg(conn, stream, rows, at, event_ids, texts, now)
            if head_row is None:
                ensure_stream(session, stream)
                head_row = _append_pg(conn, stream, rows, at, event_ids, texts, now)
                assert head_row is not None
        else:
            head_row = _bump(session, stream, len(at), now)
            first = int(head_row[0]) - len(at) + 1
            conn.execute(_EVENTS.insert(), [
                {"id": event_ids[i], "stream": stream, "offset": first + k, "type": rows[i][1],
                 "payload": rows[i][2], "created_at": now} for k, i in enumerate(at)])
        for i, record in zip(at, _records(stream, head_row, rows, at, event_ids, now),
                             strict=True):
            records[i] = record
        schedule_nudge(session, stream, nudge)
    return records  # type: ignore[return-value]  # every index was filled


# PostgreSQL: the events of many streams in one statement (one round trip, whatever the
# number of streams, new or not). `made` first creates the streams missing from the
# statement's snapshot, in name order, with their heads already raised by their events'
# count (no second write of a row just made), and `cur` their relay cursors (`_made`).
# Then (`lk` waits for `made`: its one-time filter reads it whole) the streams
# that existed are locked in name order and `bump` raises their heads; `mark` adds or
# updates every stream's row of `pending_streams` (only this transaction can hold those
# rows now, or the relay for a moment: it never waits, SKIP LOCKED); `ins` inserts every
# event at its stream's new head - n + its rank k in the stream. So a transaction's waits
# go inserts first, then row locks, each in name order: no cycle with another batch, also
# when both create the same new streams at once.
# A stream made meanwhile by another transaction (seen by the insert, not in the
# snapshot) is skipped, and then nothing is locked: the streams not answered are
# appended by running this again (they all exist then). In WHOLE_SQL such a stream is a
# unique violation instead: the statement does all of the batch or fails with nothing
# written, so it may commit by itself (autocommit).
_NAMES = """\
WITH v AS MATERIALIZED (
  SELECT v.name, v.n::bigint AS n
  FROM ROWS FROM (json_array_elements_text(%(names)s::json),
                  json_array_elements_text(%(counts)s::json)) AS v(name, n)),
"""
# The events' insert closing the statements over many streams: each event at its
# stream's new head - n + its rank k in the stream, from `heads` (name, head, epoch, n).
_INSERT_EVENTS = """\
ins AS (
  INSERT INTO events (id, stream, "offset", type, payload, created_at)
  SELECT r.id, r.stream, h.head - h.n + r.k::bigint, r.type, r.payload, %(ts)s
  FROM ROWS FROM (json_array_elements_text(%(ids)s::json),
                  json_array_elements_text(%(streams)s::json),
                  json_array_elements_text(%(ks)s::json),
                  json_array_elements_text(%(types)s::json),
                  json_array_elements(%(payloads)s::json)) AS r(id, stream, k, type, payload)
  JOIN heads AS h ON h.name = r.stream)
SELECT name, head, epoch FROM heads"""


def _made(rows: str, on_conflict: str = "") -> str:
    """The CTEs `made`, the streams of `rows` (`m`: name, n) created in name order with
    their heads already raised by their events' count, and `cur`, their relay cursors (a
    plain insert: a cursor needs its stream, and these streams did not exist until this
    statement made them; ON CONFLICT's speculative insertion cost about 10 ms a batch of
    1,000 new streams)."""
    return f"""made AS (
  INSERT INTO streams (name, epoch, head, pruned_through, created_at)
  SELECT m.name, replace(left(gen_random_uuid()::text, 18), '-', ''), m.n, 0, %(ts)s
  FROM {rows} ORDER BY m.name
{on_conflict}  RETURNING name, head, epoch, head AS n),
cur AS (
  INSERT INTO relay_cursors (stream, dispatched, state, attempts)
  SELECT name, 0, 'active', 0 FROM made),
"""


APPEND_MANY_SQL = _NAMES + """\
missing AS MATERIALIZED (
  SELECT v.name, v.n FROM v WHERE NOT EXISTS (SELECT 1 FROM streams AS s WHERE s.name = v.name)),
""" + _made("missing AS m", "  ON CONFLICT (name) DO NOTHING\n") + """\
lk AS (SELECT s.name FROM streams AS s
       WHERE s.name IN (SELECT name FROM v)
         AND (SELECT count(*) FROM made) = (SELECT count(*) FROM missing)
       ORDER BY s.name FOR UPDATE),
bump AS (
  UPDATE streams AS s SET head = s.head + v.n
  FROM v, lk WHERE s.name = v.name AND lk.name = v.name
  RETURNING s.name, s.head, s.epoch, v.n),
heads AS MATERIALIZED (SELECT name, head, epoch, n FROM bump
                       UNION ALL SELECT name, head, epoch, n FROM made),
""" + _mark("heads ORDER BY name") + _INSERT_EVENTS
WHOLE_SQL = APPEND_MANY_SQL.replace("  ON CONFLICT (name) DO NOTHING\n", "")

# PostgreSQL, autocommit only: the events of many streams that all exist, or that all
# are new, with each stream found once. `lk` looks up and locks the streams in name
# order, as the lock step of every writer does, and keeps where it found each row;
# `quick` raises the heads of the rows by that address (a TID scan: no second walk of
# `pk_streams`, which at a million streams is a random leaf and row per stream). A row
# another writer updated and committed after this statement's snapshot was locked at its
# newest version, which the snapshot does not see at that address: `late` raises those
# heads by name (the update follows the row to the version this statement holds), and
# only when `quick` missed some. If `lk` found none of the streams, `made` makes them all
# (with their heads already raised) and their relay cursors, as WHOLE_SQL does: holding
# no lock of this statement, it may wait on another writer's insert of the same stream
# (then a unique violation fails the statement, nothing written). If only some streams
# exist, nothing is written and no row answers: the caller runs WHOLE_SQL, which makes
# the missing ones before it locks the others. So this statement either takes row locks
# (first, in name order) or inserts, never both: it joins no cycle with any writer.
EXISTING_SQL = _NAMES + """\
lk AS MATERIALIZED (
  SELECT s.name, s.ctid AS tid FROM streams AS s
  WHERE s.name IN (SELECT name FROM v) ORDER BY s.name FOR UPDATE),
every AS MATERIALIZED (SELECT (SELECT count(*) FROM lk) = (SELECT count(*) FROM v) AS ok),
""" + _made("v AS m WHERE (SELECT count(*) FROM lk) = 0") + """\
quick AS (
  UPDATE streams AS s SET head = s.head + v.n
  FROM lk JOIN v ON v.name = lk.name
  WHERE s.ctid = lk.tid AND (SELECT ok FROM every)
  RETURNING s.name, s.head, s.epoch, v.n),
late AS (
  UPDATE streams AS s SET head = s.head + (SELECT v.n FROM v WHERE v.name = s.name)
  WHERE (SELECT count(*) FROM quick) < (SELECT count(*) FROM lk)
    AND (SELECT ok FROM every)
    AND s.name = ANY (ARRAY(SELECT name FROM lk EXCEPT SELECT name FROM quick))
  RETURNING s.name, s.head, s.epoch),
heads AS MATERIALIZED (
  SELECT name, head, epoch, n FROM quick
  UNION ALL SELECT l.name, l.head, l.epoch, v.n FROM late AS l JOIN v ON v.name = l.name
  UNION ALL SELECT name, head, epoch, n FROM made),
""" + _mark("heads ORDER BY name") + _INSERT_EVENTS


def _append_many_pg(conn: Connection, rows: Sequence[Row], by_stream: dict[str, list[int]],
                    ids: Sequence[str], payloads: Sequence[str], now: datetime
                    ) -> list[tuple[str, Any]]:
    """(stream, (new head, epoch, now)) for every stream of `by_stream`, after appending
    its rows with APPEND_MANY_SQL (again for the streams another transaction made
    meanwhile, if any)."""
    names = sorted(by_stream)
    done: list[tuple[str, Any]] = []
    for _ in range(3):
        params = append_many_params(names, rows, by_stream, ids, payloads, now)
        answer = conn.exec_driver_sql(APPEND_MANY_SQL, params).all()
        done += [(name, (head, epoch, now)) for name, head, epoch in answer]
        appended = {name for name, _head, _epoch in answer}
        names = [name for name in names if name not in appended]
        if not names:
            return done
    raise RuntimeError(f"streams neither found nor created: {', '.join(names[:5])}")


def append_whole(conn: Connection, rows: Sequence[Row], ids: Sequence[str],
                 payloads: Sequence[str]) -> list[EventRecord]:
    """Events of any streams, new or not, in one statement of their own on a PostgreSQL
    connection in autocommit: all of them commit together. EXISTING_SQL first (one round
    trip when every stream exists, or none does); if only some do, nothing was written and
    WHOLE_SQL makes the missing streams and appends. Raises IntegrityError, nothing written, if
    another transaction made one of the streams meanwhile: then use `append_rows` in a
    transaction. The caller nudges the relay afterwards."""
    now = utcnow()
    by_stream: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_stream.setdefault(row[0], []).append(i)
    params = append_many_params(sorted(by_stream), rows, by_stream, ids, payloads, now)
    records: list[EventRecord | None] = [None] * len(rows)
    answer = conn.exec_driver_sql(EXISTING_SQL, params).all()
    if not answer:  # some streams to make, others to lock: nothing was written
        answer = conn.exec_driver_sql(WHOLE_SQL, params).all()
    for name, head, epoch in answer:
        at = by_stream.pop(name)
        first, epoch_text = int(head) - len(at) + 1, str(epoch)
        for k, i in enumerate(at):  # _records, inline: a thousand calls fewer
            records[i] = EventRecord(ids[i], name, first + k, epoch_text, rows[i][1],
                                     rows[i][2], now)
    if by_stream:  # streams are never deleted: every one was found or made
        raise RuntimeError(f"streams not appended: {', '.join(sorted(by_stream)[:5])}")
    return records  # type: ignore[return-value]  # every index was filled


def append_many_params(names: Sequence[str], rows: Sequence[Row],
                       by_stream: dict[str, list[int]], ids: Sequence[str],
                       payloads: Sequence[str], now: datetime) -> dict[str, Any]:
    """The parameters of APPEND_MANY_SQL for the rows of streams `names` (sorted)."""
    at = [i for name in names for i in by_stream[name]]
    return {"names": _json_list(list(names)),
            "counts": _json_list([len(by_stream[name]) for name in names]),
            "ts": now,
            "ids": _json_list([ids[i] for i in at]),
            "streams": _json_list([rows[i][0] for i in at]),
            "ks": _json_list([k for name in names for k in range(1, len(by_stream[name]) + 1)]),
            "types": _json_list([rows[i][1] for i in at]),
            "payloads": "[" + ",".join([payloads[i] for i in at]) + "]"}


def append_alone(conn: Connection, stream: str, rows: Sequence[Row], ids: Sequence[str],
                 payloads: Sequence[str]) -> list[EventRecord] | None:
    """Events of one existing stream in one statement of their own, on a PostgreSQL
    connection in autocommit: the head bump and the inserts commit together (one round
    trip, no BEGIN, no COMMIT). None if the stream does not exist yet (nothing is written:
    use `append_rows` in a transaction). The caller nudges the relay afterwards.
    """
    at = list(range(len(rows)))
    head_row = _append_pg(conn, stream, rows, at, ids, payloads, utcnow())
    if head_row is None:
        return None
    return _records(stream, head_row, rows, at, ids, head_row[2])


def _append_pg(conn: Connection, stream: str, rows: Sequence[Row], at: list[int],
               ids: Sequence[str], payloads: Sequence[str], now: datetime) -> Any:
    """(new head, epoch, now) after appending rows `at` to `stream`, or None if there is no
    such stream (then nothing is written)."""
    params = append_params(stream, rows, at, ids, payloads, now)
    row = conn.exec_driver_sql(APPEND_SQL, params).first()
    return None if row is None else (row[0], row[1], now)


def append_params(stream: str, rows: Sequence[Row], at: list[int], ids: Sequence[str],
                  payloads: Sequence[str], now: datetime) -> dict[str, Any]:
    """The parameters of APPEND_SQL (psycopg's `%(name)s` style) for rows `at` of `rows`,
    all of `stream`: it answers (new head, epoch), or no row if there is no such stream."""
    return {"n": len(at), "stream": stream, "ts": now,
            "ids": _json_list([ids[i] for i in at]),
            "types": _json_list([rows[i][1] for i in at]),
            "payloads": "[" + ",".join([payloads[i] for i in at]) + "]"}


def records_of(stream: str, head: int, epoch: str, rows: Sequence[Row], ids: Sequence[str],
               now: datetime) -> list[EventRecord]:
    """The records of `rows` (all of `stream`) appended by APPEND_SQL, which answered
    (head, epoch)."""
    return _records(stream, (head, epoch), rows, list(range(len(rows))), ids, now)


def _records(stream: str, head_row: Any, rows: Sequence[Row], at: list[int],
             ids: Sequence[str], now: datetime) -> list[EventRecord]:
    first, epoch = int(head_row[0]) - len(at) + 1, str(head_row[1])
    return [EventRecord(ids[i], stream, first + k, epoch, rows[i][1], rows[i][2], now)
            for k, i in enumerate(at)]


_STREAMS = cast(Table, Stream.__table__)
_EVENTS = cast(Table, Event.__table__)
_PENDING_STREAMS = cast(Table, PendingStream.__table__)


def _bump(session: Session, stream: str, n: int, now: datetime) -> Any:
    """(head, epoch) after adding `n` to the stream's head and marking it pending (SQLite:
    its writers are serialised by the database lock); creates a missing stream."""
    conn = session.connection()
    bump = (update(_STREAMS).where(_STREAMS.c.name == stream)
            .values(head=_STREAMS.c.head + n)
            .returning(_STREAMS.c.head, _STREAMS.c.epoch))
    head_row = conn.execute(bump).first()
    if head_row is None:
        ensure_stream(session, stream)
        head_row = conn.execute(bump).one()
    mark = sqlite_insert(_PENDING_STREAMS).values(name=stream, head=head_row[0],
                                                  epoch=head_row[1], since=now)
    conn.execute(mark.on_conflict_do_update(
        index_elements=[_PENDING_STREAMS.c.name],
        set_={"head": mark.excluded.head, "since": _marked_since(mark.excluded.since)}))
    return head_row


def _marked_since(now: Any) -> Any:
    """A marked stream's `since` after a bump at `now`: the earlier of the two (the
    earliest time of the events written since it was marked, whatever order writers with
    their own clocks bump in; unknown stays unknown); see app.outbox.ops.status."""
    since = _PENDING_STREAMS.c.since
    return case((now < since, now), else_=since)


def load_event(session: Session, event_id: str) -> EventRecord | None:
    row = session.execute(
        select(Event, Stream.epoch).join(Stream, Stream.name == Event.stream)
        .where(Event.id == event_id)
    ).first()
    if row is None:
        return None
    event, epoch = row
    return EventRecord(event.id, event.stream, event.offset, epoch, event.type, event.payload,
                       event.created_at)


def schedule_nudge(session: Session, stream: str, nudge: Nudger | None = None) -> None:
    """Nudge the relay for `stream` after the session commits (nothing if it rolls back)."""
    pending: set[str] = session.info.setdefault(_PENDING, set())
    pending.add(stream)
    if nudge is not None:
        session.info[NUDGER] = nudge


# Once for every Session (cheaper than listeners per session): a session that appended
# nudges after its commit, and forgets its streams if it rolls back.
@sa_event.listens_for(Session, "after_commit")
def _after_commit(sess: Session) -> None:
    if _PENDING in sess.info:
        streams = sorted(sess.info.pop(_PENDING))
        if streams:
            nudge_now(sess, streams)


@sa_event.listens_for(Session, "after_rollback")
def _after_rollback(sess: Session) -> None:
    sess.info.pop(_PENDING, None)


def nudge_now(session: Session, streams: list[str]) -> None:
    """Call the session's nudger (if it has one); a failure is logged, never raised."""
    nudger: Nudger | None = session.info.get(NUDGER)
    if nudger is None:  # no relay to nudge here: the workers' sweep relays these streams
        return
    nudge_with(nudger, streams)


def nudge_with(nudger: Nudger, streams: list[str]) -> None:
    """`nudger(streams)`, after a commit; a failure is logged, never raised."""
    try:
        nudger(streams)
    except Exception as exc:  # the events are safe; the sweep will relay them
        log.warning("relay nudge failed streams=%d error=%s", len(streams), type(exc).__name__)
