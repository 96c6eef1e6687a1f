"""Reading a user's inbox: its streams, watermarks, counts (exact to 999) and pages.

Counts are never a scan of the user's notifications: each is a bounded count (it stops
at 1,000) over the notifications after a watermark, plus the user's explicit
exceptions below it. A user with 100,000 notifications who marked all read costs a few
index probes; one who never did costs a count that stops at 1,000.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    Text,
    and_,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from app.core.db import iso_utc
from app.core.errors import Forbidden, NotFound
from app.core.jsoncodec import loads
from app.outbox.streams import ROLE_STREAMS, user_stream
from app.outbox.tables import Event
from app.portal.auth import Principal
from app.portal.inbox_tables import IS_NOTIFICATION, InboxCursor, InboxItem

CAP = 999  # counts are exact up to this, then CAP with countsCapped
STATES = ("unread", "all", "archived")
E = cast(Table, Event.__table__)
X = cast(Table, InboxItem.__table__)
C = cast(Table, InboxCursor.__table__)


def inbox_streams(who: Principal) -> tuple[int, list[str]]:
    """The user's id and the streams whose notifications are their inbox."""
    uid = who.user_id
    if uid is None or who.role not in ROLE_STREAMS:
        raise Forbidden("only users have an inbox")
    return uid, [user_stream(uid), ROLE_STREAMS[who.role]]


@dataclass(frozen=True, slots=True)
class Counts:
    """Unread and unseen items (not archived); each exact up to CAP."""

    unread: int
    unseen: int

    @property
    def capped(self) -> bool:
        return self.unread > CAP or self.unseen > CAP

    def to_dict(self) -> dict[str, Any]:
        return {"unread": min(self.unread, CAP), "unseen": min(self.unseen, CAP),
                "countsCapped": self.capped}


@dataclass(frozen=True, slots=True)
class Marks:
    """A user's watermarks on one stream."""

    read_through: int = 0
    seen_through: int = 0


def watermarks(session: Session, uid: int, streams: list[str]) -> dict[str, Marks]:
    rows = session.connection().execute(
        select(C.c.stream, C.c.read_through, C.c.seen_through)
        .where(C.c.user_id == uid, C.c.stream.in_(streams))).all()
    found = {r.stream: Marks(int(r.read_through), int(r.seen_through)) for r in rows}
    return {s: found.get(s, Marks()) for s in streams}


def _joined(uid: int) -> Any:
    return E.outerjoin(X, and_(X.c.user_id == uid, X.c.event_id == E.c.id))


def _not(column: Any) -> Any:
    """The explicit flag is unset or false."""
    return or_(column.is_(None), column == false())


def _bounded(query: Select[Any]) -> Any:
    """count(*) of `query`, stopping at CAP + 1 rows: a scalar subquery."""
    return select(func.count()).select_from(query.limit(CAP + 1).subquery()).scalar_subquery()


def counts(session: Session, uid: int, streams: list[str],
           marks: dict[str, Marks] | None = None) -> Counts:
    """The user's unread and unseen counts (each part bounded at CAP + 1), in one query."""
    marks = marks if marks is not None else watermarks(session, uid, streams)
    unread, unseen = [], []
    for stream in streams:
        mark = marks[stream]
        unread.append(_bounded(
            select(literal(1)).select_from(_joined(uid))
            .where(E.c.stream == stream, IS_NOTIFICATION, E.c.offset > mark.read_through,
                   _not(X.c.read), _not(X.c.archived))))
        unread.append(_bounded(select(literal(1)).where(
            X.c.user_id == uid, X.c.stream == stream, X.c.offset <= mark.read_through,
            X.c.read == false(), X.c.archived == false())))
        unseen.append(_bounded(
            select(literal(1)).select_from(_joined(uid))
            .where(E.c.stream == stream, IS_NOTIFICATION, E.c.offset > mark.seen_through,
                   _not(X.c.seen), _not(X.c.archived))))
    row = session.connection().execute(select(*unread, *unseen)).one()
    return Counts(sum(row[:len(unread)]), sum(row[len(unread):]))


# -- pages ---------------------------------------------------------------------------------
_COLUMNS = (E.c.id, E.c.stream, E.c.offset, sql_cast(E.c.payload, Text).label("payload"),
            E.c.created_at, X.c.read, X.c.seen, X.c.archived)
_NEWEST = (E.c.created_at.desc(), E.c.offset.desc())


MAX_ID_LENGTH = 36  # an item id is an event's UUID


def item_id(value: Any) -> str | None:
    """An item id (an event's UUID, in its canonical form) from untrusted input; None if
    `value` is not a UUID string, which then never reaches the database (NUL, odd text)."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def view(session: Session, who: Principal, *, state: str, limit: int,
         before: str | None) -> tuple[list[dict[str, Any]], bool, Counts]:
    """A page (see `page`) and the counts, on the same watermarks."""
    uid, streams = inbox_streams(who)
    marks = watermarks(session, uid, streams)
    items, more = page(session, who, state=state, limit=limit, before=before, marks=marks)
    return items, more, counts(session, uid, streams, marks)


def page(session: Session, who: Principal, *, state: str, limit: int, before: str | None,
         marks: dict[str, Marks] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` items newest first (by creation time, then offset, then stream), older
    than the item `before` if given; and whether there are more. `all` and `unread` leave
    archived items out."""
    uid, streams = inbox_streams(who)
    marks = marks if marks is not None else watermarks(session, uid, streams)
    after = None
    if before is not None:
        before_id = item_id(before)
        after = None if before_id is None else session.connection().execute(
            select(E.c.created_at, E.c.offset, E.c.stream)
            .where(E.c.id == before_id, E.c.stream.in_(streams), IS_NOTIFICATION)).first()
        if after is None:
            raise NotFound("no such item in this inbox (before)")
    queries = []
    for stream in streams:
        mark = marks[stream]
        base = select(*_COLUMNS).select_from(_joined(uid)).where(E.c.stream == stream,
                                                                 IS_NOTIFICATION)
        if after is not None:
            base = base.where(_older(stream, after))
        if state == "archived":
            queries.append(base.where(X.c.archived.is_(True)))
        elif state == "all":
            queries.append(base.where(_not(X.c.archived)))
        else:  # unread: after the watermark and not read, or explicitly unread below it
            queries.append(base.where(E.c.offset > mark.read_through, _not(X.c.read),
                                      _not(X.c.archived)))
            queries.append(base.where(E.c.offset <= mark.read_through, X.c.read == false(),
                                      X.c.archived == false()))
    parts = [select(q.order_by(*_NEWEST).limit(limit + 1).subquery()) for q in queries]
    rows = list(session.connection().execute(union_all(*parts)).all())
    rows.sort(key=lambda r: (_sortable(r.created_at), r.offset, r.stream), reverse=True)
    return [_item(r, marks[r.stream]) for r in rows[:limit]], len(rows) > limit


def _older(stream: str, key: Any) -> Any:
    """Items of `stream` after `key` (created_at, offset, stream) in newest-first order; the
    stream name breaks ties between streams."""
    here = tuple_(E.c.created_at, E.c.offset)
    there = tuple_(literal(key[0], E.c.created_at.type), literal(key[1], E.c.offset.type))
    return here <= there if stream < key[2] else here < there


def _sortable(ts: datetime) -> datetime:
    return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)


def _item(row: Any, mark: Marks) -> dict[str, Any]:
    payload = loads(row.payload)
    body = payload if isinstance(payload, dict) else {}
    read = bool(row.read) if row.read is not None else row.offset <= mark.read_through
    seen = bool(row.seen) or row.offset <= mark.seen_through or read
    return {"id": row.id, "stream": row.stream, "offset": int(row.offset),
            "type": body.get("type"), "title": body.get("title"), "message": body.get("message"),
            "createdAt": iso_utc(row.created_at), "read": read, "seen": seen,
            "archived": bool(row.archived)}
