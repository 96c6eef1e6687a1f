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
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import InvalidInput, TooLarge
from app.outbox.streams import parse_stream, validate_type
from app.outbox.tables import Event, EventRecord, RelayCursor, Stream, new_epoch

log = logging.getLogger("herald.outbox")

MAX_DATA_BYTES = 64 * 1024
MAX_DATA_DEPTH = 32  # levels of objects and arrays: deeper JSON cannot be delivered or paged
Nudger = Callable[[list[str]], None]
_PENDING = "herald.nudge_streams"
_HOOKED = "herald.nudge_hooked"


def ensure_stream(session: Session, name: str) -> None:
    """Create the stream (and its relay cursor) if it does not exist; never blocks on writers."""
    dialect = session.get_bind().dialect.name
    values = {"name": name, "epoch": new_epoch(), "head": 0, "pruned_through": 0,
              "created_at": utcnow()}
    if dialect == "postgresql":
        session.execute(pg_insert(Stream).values(**values).on_conflict_do_nothing())
        session.execute(
            pg_insert(RelayCursor).values(stream=name, dispatched=0, state="active", attempts=0)
            .on_conflict_do_nothing()
        )
    elif dialect == "sqlite":
        session.execute(sqlite_insert(Stream).values(**values).on_conflict_do_nothing())
        session.execute(
            sqlite_insert(RelayCursor).values(stream=name, dispatched=0, state="active", attempts=0)
            .on_conflict_do_nothing()
        )
    else:  # pragma: no cover - other dialects: check then insert
        if session.get(Stream, name) is None:
            session.execute(insert(Stream).values(**values))
            session.execute(insert(RelayCursor).values(stream=name))


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
    `nudge` is called with the touched stream names after a successful commit;
    by default the Celery relay is nudged.
    """
    parse_stream(stream)
    validate_type(type)
    check_data(data)
    head_row = session.execute(
        update(Stream).where(Stream.name == stream).values(head=Stream.head + 1)
        .returning(Stream.head, Stream.epoch)
    ).first()
    if head_row is None:
        ensure_stream(session, stream)
        head_row = session.execute(
            update(Stream).where(Stream.name == stream).values(head=Stream.head + 1)
            .returning(Stream.head, Stream.epoch)
        ).one()
    offset, epoch = int(head_row[0]), str(head_row[1])
    event_id = str(uuid.uuid4())
    now = utcnow()
    session.execute(
        insert(Event).values(id=event_id, stream=stream, offset=offset, type=type,
                             payload=data, created_at=now)
    )
    schedule_nudge(session, stream, nudge)
    return EventRecord(event_id, stream, offset, epoch, type, data, now)


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
        session.info["herald.nudger"] = nudge
    if session.info.get(_HOOKED):
        return
    session.info[_HOOKED] = True
    from sqlalchemy import event as sa_event

    @sa_event.listens_for(session, "after_commit")
    def _after_commit(sess: Session) -> None:
        streams = sorted(sess.info.pop(_PENDING, set()))
        if streams:
            nudger: Nudger = sess.info.get("herald.nudger") or default_nudger()
            try:
                nudger(streams)
            except Exception as exc:  # the events are safe; the sweep will relay them
                log.warning("relay nudge failed streams=%d error=%s", len(streams),
                            type(exc).__name__)

    @sa_event.listens_for(session, "after_rollback")
    def _after_rollback(sess: Session) -> None:
        sess.info.pop(_PENDING, None)


_default: Nudger | None = None


def default_nudger() -> Nudger:
    """Sends the Celery relay task for the streams (imported lazily: app does not need workers)."""
    global _default
    if _default is None:
        from app.outbox.nudge import celery_nudger

        _default = celery_nudger
    return _default


def set_default_nudger(nudger: Nudger | None) -> None:
    """Replace the process-wide nudger (tests, benchmarks, or services without Celery)."""
    global _default
    _default = nudger
