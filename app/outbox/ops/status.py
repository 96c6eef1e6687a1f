"""The outbox at a glance: totals, the oldest pending event, the most urgent streams.

Nothing here scans the streams: what is behind, retrying or failed is always in the
pending set (`pending_streams`: the relay deletes a mark only when its cursor is at the
head the mark holds, which is the stream's head).
- The totals are sums of the delta rows that triggers keep (`app.outbox.counts`): events
  pending (appended minus dispatched), streams behind (marked pending), failed and
  retrying streams; they equal a full recount in the same snapshot.
- The oldest pending event and the listed streams come from a walk of the pending streams
  in `since` order (`ix_pending_streams_since`): a mark's `since` is a lower bound of a
  stream's first pending event's time (the writer keeps it: the earliest time of the
  events written since the stream was marked, app.outbox.writer), so once the next
  stream's `since` cannot beat what was found the walk stops. Each stream walked
  gets its cursor and first pending event looked up: the walk costs about the listed
  streams, whatever is pending.
- Failed streams are listed first, longest failed first: a page of them, along an index
  of the failed cursors only (`ix_relay_cursors_failed`), however many failed. The walk
  above passes their marks too, for the oldest pending event. On PostgreSQL that page is
  read with sorts ruled out (`db.planned`), so the planner's statistics cannot make it
  sort every failed cursor instead.
- A search (`search`) lists the matching streams with one statement over the pending set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Subquery, and_, or_, select, true, tuple_, union_all
from sqlalchemy.orm import Session

from app.core.db import planned, utcnow
from app.outbox import counts
from app.outbox.ops.common import MAX_LISTED, CamelView, age, aware, iso
from app.outbox.tables import Event, PendingStream, RelayCursor

FIRST_PAGE = 16  # streams walked by the first statement (then pages double)

@dataclass(frozen=True, slots=True)
class StreamLag(CamelView):
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



@dataclass(frozen=True, slots=True)
class Status(CamelView):
    """The outbox at a glance."""

    events_pending: int
    streams_behind: int
    oldest_pending_age: float | None
    failed_streams: int
    retrying_streams: int
    streams: list[StreamLag]

    def to_dict(self) -> dict[str, Any]:
        out = CamelView.to_dict(self)  # not super(): slots=True makes a new class
        out["streams"] = [s.to_dict() for s in self.streams]
        return out




class _Lag(NamedTuple):
    """A pending stream's exact figures, as looked up."""

    stream: str
    head: int
    since: datetime | None  # the mark's `since`
    dispatched: int
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    failed_at: datetime | None
    oldest: datetime | None  # its first pending event's time

    @property
    def behind(self) -> bool:
        return self.head > self.dispatched

    def key(self) -> tuple[int, datetime, str]:
        """Listing order: failed first, longest failed first; then the oldest first
        pending event; then name."""
        if self.state == "failed":
            return (0, aware(self.failed_at) or _LAST, self.stream)
        return (1, aware(self.oldest) or _LAST, self.stream)

    def view(self, now: datetime) -> StreamLag:
        return StreamLag(
            stream=self.stream, head=self.head, dispatched=self.dispatched,
            pending=max(0, self.head - self.dispatched), state=self.state,
            attempts=self.attempts, oldest_pending_age=age(self.oldest, now),
            next_attempt_at=iso(self.next_attempt_at), last_error=self.last_error,
            failed_at=iso(self.failed_at))


_LAST = datetime.max.replace(tzinfo=UTC)


def _lookup(session: Session, streams: Subquery) -> list[_Lag]:
    """The exact figures of the streams of `streams` (columns name, head, since)."""
    rows = session.execute(
        select(streams.c.name, streams.c.head, streams.c.since, RelayCursor.dispatched,
               RelayCursor.state, RelayCursor.attempts, RelayCursor.next_attempt_at,
               RelayCursor.last_error, RelayCursor.failed_at, Event.created_at)
        .select_from(streams)
        .join(RelayCursor, RelayCursor.stream == streams.c.name)
        .outerjoin(Event, and_(Event.stream == streams.c.name,
                               Event.offset == RelayCursor.dispatched + 1))
    ).all()
    return [_Lag(name, int(head), since, int(done), state, int(attempts), next_at, error,
                 failed_at, oldest)
            for name, head, since, done, state, attempts, next_at, error, failed_at, oldest
            in rows]


def _pending(*where: Any) -> Any:
    return select(PendingStream.name, PendingStream.head, PendingStream.since).where(*where)


def _failed(session: Session, limit: int) -> list[_Lag]:
    """The `limit` longest-failed streams, oldest failure first (failed streams stay
    pending until retried)."""
    # The names first (`ix_relay_cursors_failed`: a page of the failed cursors, however
    # many failed), then their rows. With no sort the page is that index's ordered scan
    # whatever the statistics count: analysed before an incident they count no failed
    # cursor, and the planner read every failed cursor through `ix_relay_cursors_state`
    # and sorted them (5,003 index entries read for a page of 100, `test_operations`); at
    # a million streams autovacuum analyses again only after 100,000 changed rows.
    with planned(session, enable_sort="off"):
        names = list(session.scalars(
            select(RelayCursor.stream).where(RelayCursor.state == "failed")
            .order_by(RelayCursor.failed_at.asc().nulls_last(), RelayCursor.stream)
            .limit(limit)))
    if not names:
        return []
    return sorted(_lookup(session, _pending(PendingStream.name.in_(names)).subquery()),
                  key=_Lag.key)


def _walk(session: Session, need: int) -> tuple[list[_Lag], datetime | None]:
    """The `need` active streams behind with the oldest first pending events (sorted), and
    the oldest first pending event of all (failed streams' included).

    Pending streams without `since` (none, unless something else than the writer marked
    them) are all looked up; then the others in `since` order, a page at a
    time, until the next page cannot hold a stream
    with an older first pending event than the oldest found (and than the `need`th)."""
    found: list[_Lag] = []
    first: datetime | None = None

    def take(rows: Sequence[_Lag]) -> None:
        nonlocal first
        for row in rows:
            if not row.behind:
                continue
            oldest = aware(row.oldest)
            if oldest is not None and (first is None or oldest < first):
                first = oldest
            if row.state != "failed":
                found.append(row)
        found.sort(key=_Lag.key)
        del found[max(need, 0):]

    def query(unknown: bool, after: _Lag | None, page: int) -> Any:
        """A page of the pending streams without `since` (by name) or with it (in its
        order), ordered and limited as its index is: the planner takes the index
        whatever it thinks of the pending set's size."""
        if unknown:
            where = [PendingStream.since.is_(None)] + \
                ([PendingStream.name > after.stream] if after else [])
        else:
            where = [PendingStream.since.is_not(None)] + ([
                tuple_(PendingStream.since, PendingStream.name)
                > tuple_(after.since, after.stream)] if after else [])
        return _pending(*where).order_by(PendingStream.since, PendingStream.name).limit(page)

    def fetch(names: Any) -> list[_Lag]:
        return sorted(_lookup(session, names), key=lambda r: (aware(r.since), r.stream))

    page = FIRST_PAGE + max(need, 0)
    # The first page of each kind in one statement (one round trip in the usual case).
    both = fetch(union_all(query(True, None, page).subquery().select(),
                           query(False, None, page).subquery().select()).subquery())
    unknown = [r for r in both if r.since is None]
    known = [r for r in both if r.since is not None]
    size = page
    while True:  # no bound is known for these: every one of them is looked up
        take(unknown)
        if len(unknown) < size:
            break
        size *= 2
        unknown = fetch(query(True, unknown[-1], size).subquery())
    rows, size = known, page
    while True:
        take(rows)
        if len(rows) < size:
            break
        # No stream after the page's last has its first pending event before last.since
        # (nor, at that very time, a name before last's): stop once that beats neither.
        last = rows[-1]
        bound = (aware(last.since) or _LAST, last.stream)
        if first is not None and bound[0] >= first and len(found) >= need and (
                not found or bound >= found[-1].key()[1:]):
            break
        size *= 2
        rows = fetch(query(False, last, size).subquery())
    return found, first


def _searched(session: Session, limit: int, search: str) -> list[_Lag]:
    """The `limit` most urgent pending streams (behind or failed) whose name or last error
    holds `search`: one statement over the pending set."""
    names = _pending().join(RelayCursor, RelayCursor.stream == PendingStream.name) \
        .where(matching(search), or_(RelayCursor.state == "failed",
                                     PendingStream.head > RelayCursor.dispatched)).subquery()
    return sorted(_lookup(session, names), key=_Lag.key)[:limit]


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

    The totals are over every stream; the `limit` most urgent streams (failed first,
    longest failed first; then the oldest first pending event) are listed, only those
    whose name or last error holds `search` when given. Costs about the listed streams (a
    page of failed ones, the walk), not how many streams exist or failed (module
    docstring); a search reads the pending set it filters."""
    now = now or utcnow()
    totals = counts.read(session)
    failed_ = _failed(session, limit) if totals.failed and not search else []
    need = 0 if search else max(limit - len(failed_), 0)
    active, first = _walk(session, need)
    listed = _searched(session, limit, search) if search else (failed_ + active)[:limit]
    return Status(
        events_pending=totals.pending, streams_behind=totals.marked,
        oldest_pending_age=age(first, now), failed_streams=totals.failed,
        retrying_streams=totals.retrying, streams=[r.view(now) for r in listed])


def failed(session: Session, *, now: datetime | None = None,
           limit: int = 1000) -> list[StreamLag]:
    """Streams the relay gave up on, oldest failure first: attempts, last error, since when."""
    now = now or utcnow()
    return [r.view(now) for r in _failed(session, limit)]
