"""Append events inside the caller's transaction, with gapless per-stream offsets.

Offsets come from `UPDATE streams SET head = head + 1 ... RETURNING`, which locks the
stream's row until the transaction ends: appends to one stream serialise and commit in
offset order, appends to different streams never wait on each other. The relay is
nudged after the commit, never before, and a failed nudge never fails the caller.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.core.db import NUDGER, utcnow
from app.core.errors import InvalidInput, TooLarge
from app.outbox.streams import parse_stream, validate_type
from app.outbox.tables import Event, EventRecord, RelayCursor, Stream, new_epoch

log = logging.getLogger("herald.outbox")

MAX_DATA_BYTES = 64 * 1024
MAX_DATA_DEPTH = 32  # levels of objects and arrays: deeper JSON cannot be delivered or paged
Nudger = Callable[[list[str]], None]
_PENDING = "herald.nudge_streams"
_HOOKED = "herald.nudge_hooked"


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


def encoded_size(data: Any) -> int:
    try:
        return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
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
    if not isinstance(data, dict):
        raise InvalidInput("data must be a JSON object", code="invalid_data")
    if depth_over(data, MAX_DATA_DEPTH):
        raise InvalidInput(f"data nests more than {MAX_DATA_DEPTH} levels",
                           code="invalid_data")
    if encoded_size(data) > MAX_DATA_BYTES:
        raise TooLarge(f"data is over {MAX_DATA_BYTES} bytes as JSON", code="too_large")
    return data


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
    check_data(data)
    [record] = append_rows(session, [(stream, type, data)], nudge=nudge)
    return record


Row = tuple[str, str, dict[str, Any]]  # (stream, type, data), already validated


def append_rows(session: Session, rows: Sequence[Row], *, ids: Sequence[str] | None = None,
                nudge: Nudger | None = None) -> list[EventRecord]:
    """The one append path: one head bump per stream and one multi-row insert.

    `rows` must be valid (`append` and `publish.validate` check them). Events of one
    stream get consecutive offsets in list order. A missing stream is created.
    """
    counts = Counter(stream for stream, _type, _data in rows)
    next_offset: dict[str, list[Any]] = {}
    for stream in sorted(counts):
        bump = (update(Stream).where(Stream.name == stream)
                .values(head=Stream.head + counts[stream]).returning(Stream.head, Stream.epoch))
        head_row = session.execute(bump).first()
        if head_row is None:
            ensure_stream(session, stream)
            head_row = session.execute(bump).one()
        next_offset[stream] = [int(head_row[0]) - counts[stream] + 1, str(head_row[1])]
    now = utcnow()
    records: list[EventRecord] = []
    for i, (stream, type_, data) in enumerate(rows):
        slot = next_offset[stream]
        event_id = ids[i] if ids is not None else str(uuid.uuid4())
        records.append(EventRecord(event_id, stream, slot[0], slot[1], type_, data, now))
        slot[0] += 1
    if records:
        session.execute(insert(Event), [
            {"id": r.id, "stream": r.stream, "offset": r.offset, "type": r.type,
             "payload": r.payload, "created_at": now} for r in records])
    for stream in counts:
        schedule_nudge(session, stream, nudge)
    return records


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
    if session.info.get(_HOOKED):
        return
    session.info[_HOOKED] = True
    from sqlalchemy import event as sa_event

    @sa_event.listens_for(session, "after_commit")
    def _after_commit(sess: Session) -> None:
        streams = sorted(sess.info.pop(_PENDING, set()))
        if streams:
            nudge_now(sess, streams)

    @sa_event.listens_for(session, "after_rollback")
    def _after_rollback(sess: Session) -> None:
        sess.info.pop(_PENDING, None)


def nudge_now(session: Session, streams: list[str]) -> None:
    """Call the session's nudger (if it has one); a failure is logged, never raised."""
    nudger: Nudger | None = session.info.get(NUDGER)
    if nudger is None:  # no relay to nudge here: the workers' sweep relays these streams
        return
    try:
        nudger(streams)
    except Exception as exc:  # the events are safe; the sweep will relay them
        log.warning("relay nudge failed streams=%d error=%s", len(streams), type(exc).__name__)
