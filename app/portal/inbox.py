"""The inbox: read, seen and archived per user for every notification of their user stream
and their role stream (docs/protocol.md, "Inbox").

Each change writes its `inbox-updated` event on the user's stream in the same transaction
(with the ids, what was done and the counts after it), so every tab and device converges,
offline ones on replay. Changes of one user are serialised by locking their watermark
rows; ids that are not this user's notifications are refused before anything changes.
Storage and counts: app/portal/inbox_tables.py and app/portal/inbox_state.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, false, insert, null, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput, NotFound
from app.outbox.streams import user_stream
from app.outbox.tables import Event, Stream
from app.outbox.writer import append
from app.portal.auth import Principal
from app.portal.inbox_state import (
    CAP,
    MAX_ID_LENGTH,
    C,
    Counts,
    Marks,
    X,
    counts,
    inbox_streams,
    item_id,
    page,
    view,
    watermarks,
)
from app.portal.inbox_tables import IS_NOTIFICATION

ACTIONS = ("read", "unread", "seen", "archive", "unarchive")
ALL_ACTIONS = ("read", "seen")  # what `all: true` may do
MAX_IDS = 1000
UPDATED = "inbox-updated"
# action -> (the key of its ids in inbox-updated, the item columns it sets)
_EFFECTS: dict[str, tuple[str, dict[str, bool]]] = {
    "read": ("read", {"read": True, "seen": True}),  # read implies seen
    "unread": ("unread", {"read": False}),
    "seen": ("seen", {"seen": True}),
    "archive": ("archived", {"archived": True}),
    "unarchive": ("unarchived", {"archived": False}),
}


@dataclass(frozen=True, slots=True)
class Change:
    """One mark: an action on some ids, or on everything (read or seen only)."""

    action: str
    ids: tuple[str, ...] = ()
    all: bool = False


def parse_change(action: Any, ids: Any = None, all: Any = None) -> Change:
    """A Change from untrusted input (HTTP body or socket argument); InvalidInput if bad."""
    if action not in ACTIONS:
        raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}",
                           code="invalid_argument")
    if all is not None and all is not True and all is not False:
        raise InvalidInput("all must be true", code="invalid_argument")
    if all is True:
        if ids is not None:
            raise InvalidInput("give ids or all, not both", code="invalid_argument")
        if action not in ALL_ACTIONS:
            raise InvalidInput("all: true marks read or seen only", code="invalid_argument")
        return Change(action, (), True)
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS:
        raise InvalidInput(f"ids must be a list of 1 to {MAX_IDS} item ids (or all: true)",
                           code="invalid_argument")
    items = [item_id(i) for i in ids]
    if None in items:
        raise InvalidInput("each id must be an item id (a UUID string)",
                           code="invalid_argument")
    return Change(action, tuple(dict.fromkeys(i for i in items if i is not None)), False)


def mark(session: Session, who: Principal, change: Change) -> Counts:
    """Apply `change` to the caller's inbox and write its `inbox-updated` event, in the
    session's transaction; the counts after it. NotFound (nothing changed) if an id is
    not a notification of this user's streams."""
    uid, streams = inbox_streams(who)
    marks = _lock(session, uid, streams)
    if change.all:
        marks = _mark_all(session, uid, streams, change.action, marks)
    else:
        found = _items(session, streams, change.ids)
        missing = [i for i in change.ids if i not in found]
        if missing:
            raise NotFound(f"{len(missing)} of the ids are not items of this inbox "
                           f"(first: {missing[0][:MAX_ID_LENGTH]!r})")
        _apply(session, uid, found, change.action)
    after = counts(session, uid, streams, marks)
    append(session, user_stream(uid), UPDATED, updated_payload(change, after))
    return after


def updated_payload(change: Change, after: Counts) -> dict[str, Any]:
    """The `inbox-updated` payload: the ids per effect, `all`, and the counts after it."""
    body: dict[str, Any] = {key: [] for key, _ in _EFFECTS.values()}
    body[_EFFECTS[change.action][0]] = list(change.ids)
    body["all"] = change.action if change.all else None
    body["counts"] = after.to_dict()
    return body


def current_counts(session: Session, who: Principal) -> Counts:
    uid, streams = inbox_streams(who)
    return counts(session, uid, streams)


def _lock(session: Session, uid: int, streams: list[str]) -> dict[str, Marks]:
    """Create the user's watermark rows if missing and lock them (in stream order): one
    change of this user at a time. Their values."""
    _insert_missing(session, C, [{"user_id": uid, "stream": s, "read_through": 0,
                                  "seen_through": 0} for s in streams])
    rows = session.connection().execute(
        select(C.c.stream, C.c.read_through, C.c.seen_through)
        .where(C.c.user_id == uid, C.c.stream.in_(streams))
        .order_by(C.c.stream).with_for_update()).all()
    return {r.stream: Marks(int(r.read_through), int(r.seen_through)) for r in rows}


def _items(session: Session, streams: list[str], ids: tuple[str, ...]) -> dict[str, Any]:
    rows = session.connection().execute(
        select(Event.id, Event.stream, Event.offset)
        .where(Event.id.in_(ids), Event.stream.in_(streams), IS_NOTIFICATION)).all()
    return {r.id: r for r in rows}


def _apply(session: Session, uid: int, found: dict[str, Any], action: str) -> None:
    try:
        _insert_missing(session, X, [
            {"user_id": uid, "event_id": r.id, "stream": r.stream, "offset": int(r.offset),
             "read": None, "seen": False, "archived": False} for r in found.values()])
    except IntegrityError:  # retention deleted one of the events since it was read
        raise NotFound("an item was pruned meanwhile (older than the retention)") from None
    session.connection().execute(
        update(X).where(X.c.user_id == uid, X.c.event_id.in_(list(found)))
        .values(**_EFFECTS[action][1]))


def _mark_all(session: Session, uid: int, streams: list[str], action: str,
              marks: dict[str, Marks]) -> dict[str, Marks]:
    """Raise the watermarks to each stream's committed head: whatever commits later (a
    higher offset) stays unread and unseen. The new watermarks."""
    heads = {name: int(head) for name, head in session.connection().execute(
        select(Stream.name, Stream.head).where(Stream.name.in_(streams)))}
    raised = {}
    for stream in streams:
        head, mark = heads.get(stream, 0), marks[stream]
        seen = max(mark.seen_through, head)
        read = max(mark.read_through, head) if action == "read" else mark.read_through
        raised[stream] = Marks(read, seen)
        if raised[stream] != mark:
            session.connection().execute(
                update(C).where(C.c.user_id == uid, C.c.stream == stream)
                .values(read_through=read, seen_through=seen))
    if action == "read":  # the explicit "unread" rows below the new watermarks follow them
        session.connection().execute(
            update(X).where(X.c.user_id == uid, X.c.read == false(), or_(*(
                and_(X.c.stream == s, X.c.offset <= raised[s].read_through) for s in streams)))
            .values(read=null()))
    return raised


def _insert_missing(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT the rows whose primary key is not there yet (ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        make = pg_insert if dialect == "postgresql" else sqlite_insert
        session.connection().execute(make(table).values(rows).on_conflict_do_nothing())
        return
    session.connection().execute(insert(table), rows)  # pragma: no cover - unsupported


__all__ = ["ACTIONS", "CAP", "MAX_IDS", "UPDATED", "Change", "Counts", "current_counts",
           "mark", "page", "parse_change", "updated_payload", "view", "watermarks"]
