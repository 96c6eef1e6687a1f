"""The inbox's domain (docs/protocol.md, "Inbox"), on SQLite and PostgreSQL: read, seen and
archived per user, counts exact to 999, foreign ids refused, mark-all-read against new
notifications, retention."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.core.db import utcnow
from app.core.errors import InvalidInput, NotFound
from app.outbox.retention import prune_events
from app.outbox.tables import Event, RelayCursor, Stream
from app.outbox.writer import append, append_rows
from app.portal import inbox, projects
from app.portal.auth import Principal
from testkit.databases import Database


def user(db: Database, role: str = "client") -> Principal:
    with db.factory() as session, session.begin():
        row = projects.create_user(session, email=f"{role}-{utcnow().timestamp()}@t",
                                   role=role, name=role)
        return Principal(str(row.id), row.email, role)


def notify(db: Database, stream: str, count: int = 1) -> list[str]:
    with db.factory() as session, session.begin():
        rows = [(stream, "notification", {"type": "info", "title": f"n{i}", "message": "m"})
                for i in range(count)]
        return [r.id for r in append_rows(session, rows)]


def mark(db: Database, who: Principal, action: str, ids: list[str] | None = None,
         all: bool | None = None) -> dict[str, Any]:
    with db.factory() as session, session.begin():
        return inbox.mark(session, who, inbox.parse_change(action, ids, all)).to_dict()


def counts(db: Database, who: Principal) -> dict[str, Any]:
    with db.factory() as session:
        return inbox.current_counts(session, who).to_dict()


def listing(db: Database, who: Principal, state: str = "all", limit: int = 50,
            before: str | None = None) -> tuple[list[dict[str, Any]], bool]:
    with db.factory() as session:
        return inbox.page(session, who, state=state, limit=limit, before=before)


def unread(n: int, unseen: int | None = None) -> dict[str, Any]:
    return {"unread": n, "unseen": n if unseen is None else unseen, "countsCapped": False}


def events_of(db: Database, stream: str, type_: str) -> list[dict[str, Any]]:
    with db.factory() as session:
        return list(session.scalars(select(Event.payload).where(
            Event.stream == stream, Event.type == type_).order_by(Event.offset)))


def test_notifications_of_the_users_and_role_streams_are_items_newest_first(
        db: Database) -> None:
    who = user(db)
    mine = notify(db, f"user-{who.sub}", 2)
    role = notify(db, "clients")
    notify(db, "technicians")  # another role's
    with db.factory() as session, session.begin():
        append(session, f"user-{who.sub}", "quote-updated", {"quoteId": 1, "status": "x"})
    items, more = listing(db, who)
    assert [i["id"] for i in items] == [*role, *reversed(mine)] and not more
    assert items[0] | {"createdAt": None} == {
        "id": role[0], "stream": "clients", "offset": 1, "type": "info", "title": "n0",
        "message": "m", "createdAt": None, "read": False, "seen": False, "archived": False}
    assert counts(db, who) == unread(3)


def test_marking_read_unread_seen_and_archive_change_the_item_and_the_counts(
        db: Database) -> None:
    who = user(db)
    a, b, c = notify(db, f"user-{who.sub}", 3)
    assert mark(db, who, "read", [a]) == unread(2)
    assert mark(db, who, "seen", [b]) == unread(2, unseen=1)
    assert mark(db, who, "archive", [c]) == unread(1, unseen=0)
    items = {i["id"]: i for i in listing(db, who)[0]}
    assert set(items) == {a, b}
    assert (items[a]["read"], items[a]["seen"], items[b]["read"], items[b]["seen"]) == (
        True, True, False, True)
    assert [i["id"] for i in listing(db, who, "archived")[0]] == [c]
    assert [i["id"] for i in listing(db, who, "unread")[0]] == [b]
    assert mark(db, who, "unread", [a]) == unread(2, unseen=0)
    assert mark(db, who, "unarchive", [c]) == unread(3, unseen=1)


def test_each_change_writes_inbox_updated_on_the_users_stream_and_is_no_item(
        db: Database) -> None:
    who = user(db)
    [a] = notify(db, f"user-{who.sub}")
    mark(db, who, "read", [a, a])
    mark(db, who, "read", all=True)
    first, second = events_of(db, f"user-{who.sub}", "inbox-updated")
    assert first == {"read": [a], "unread": [], "seen": [], "archived": [], "unarchived": [],
                     "all": None, "counts": unread(0)}
    assert second["all"] == "read" and second["read"] == []
    assert [i["id"] for i in listing(db, who)[0]] == [a]


def test_unknown_foreign_and_non_notification_ids_are_refused_and_nothing_changes(
        db: Database) -> None:
    who, other = user(db), user(db)
    [mine] = notify(db, f"user-{who.sub}")
    [theirs] = notify(db, f"user-{other.sub}")
    [tech] = notify(db, "technicians")
    with db.factory() as session, session.begin():
        quote = append(session, f"user-{who.sub}", "quote-updated", {"quoteId": 1}).id
    for bad in (theirs, tech, quote, str(uuid.uuid4())):
        with pytest.raises(NotFound):
            mark(db, who, "read", [mine, bad])
    assert counts(db, who) == unread(1)
    assert events_of(db, f"user-{who.sub}", "inbox-updated") == []


def test_an_id_in_capitals_names_the_same_item(db: Database) -> None:
    who = user(db)
    [mine] = notify(db, f"user-{who.sub}")
    assert mark(db, who, "read", [mine.upper()]) == unread(0)
    [updated] = events_of(db, f"user-{who.sub}", "inbox-updated")
    assert updated["read"] == [mine]


@pytest.mark.parametrize("args", [
    ("delete", ["x"], None), ("read", None, None), ("read", [], None), ("read", "x", None),
    ("read", [1], None), ("read", ["x" * 37], None), ("archive", None, True),
    ("read", ["x"], True), ("read", None, "yes"), ("read", ["x"] * 1001, None),
    ("read", ["no-such-id"], None), ("unread", ["a\x00b"], None),
    ("read", [str(uuid.uuid4())[:-1] + "\x00"], None)])
def test_bad_changes_are_invalid_arguments(args: tuple[Any, Any, Any]) -> None:
    with pytest.raises(InvalidInput) as raised:
        inbox.parse_change(*args)
    assert raised.value.code == "invalid_argument"


def test_a_role_notification_is_read_per_user(db: Database) -> None:
    one, two = user(db), user(db)
    [shared] = notify(db, "clients")
    assert mark(db, one, "read", [shared]) == unread(0)
    assert counts(db, two) == unread(1)
    assert mark(db, two, "read", all=True) == unread(0)
    assert counts(db, one) == unread(0)


def test_mark_all_read_covers_what_was_committed_and_explicit_unread_items(
        db: Database) -> None:
    who = user(db)
    old = notify(db, f"user-{who.sub}", 3) + notify(db, "clients", 2)
    mark(db, who, "read", all=True)
    assert mark(db, who, "unread", old[:2]) == unread(2, unseen=0)
    assert mark(db, who, "read", all=True) == unread(0)
    new = notify(db, "clients") + notify(db, f"user-{who.sub}")
    assert counts(db, who) == unread(2)
    assert [i["id"] for i in listing(db, who, "unread")[0]] == list(reversed(new))
    assert mark(db, who, "seen", all=True) == unread(2, unseen=0)


def test_counts_are_exact_to_999_then_capped(db: Database) -> None:
    who = user(db)
    ids = notify(db, f"user-{who.sub}", 600) + notify(db, "clients", 403)
    assert counts(db, who) == {"unread": 999, "unseen": 999, "countsCapped": True}
    assert mark(db, who, "read", ids[:4]) == {"unread": 999, "unseen": 999,
                                               "countsCapped": False}
    assert mark(db, who, "seen", ids[4:5]) == {"unread": 999, "unseen": 998,
                                                "countsCapped": False}
    assert mark(db, who, "read", ids[4:6]) == unread(997)
    items, more = listing(db, who, "unread", limit=200)
    assert len(items) == 200 and more
    assert mark(db, who, "read", all=True) == unread(0)


def test_pages_go_back_with_before_until_has_more_is_false(db: Database) -> None:
    who = user(db)
    ids = notify(db, f"user-{who.sub}", 3) + notify(db, "clients", 2)
    seen: list[str] = []
    before = None
    while True:
        items, more = listing(db, who, limit=2, before=before)
        seen += [i["id"] for i in items]
        if not more:
            break
        before = items[-1]["id"]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    with pytest.raises(NotFound):
        listing(db, who, before="no-such-id")


def test_pruned_notifications_leave_the_inbox_and_the_counts(db: Database) -> None:
    who = user(db)
    old = notify(db, f"user-{who.sub}", 3) + notify(db, "clients", 2)
    mark(db, who, "unread", old[:1])
    mark(db, who, "archive", old[1:2])
    mark(db, who, "read", old[2:3])
    new = notify(db, "clients")
    with db.factory() as session, session.begin():
        session.execute(update(Event).where(Event.id.in_(old))
                        .values(created_at=utcnow() - timedelta(days=30)))
        for stream, head in session.execute(select(Stream.name, Stream.head)).all():
            session.execute(update(RelayCursor).where(RelayCursor.stream == stream)
                            .values(dispatched=head))
    assert counts(db, who) == unread(4)  # 3 + 2 - one read - one archived + the new one
    prune_events(db.factory, retention=timedelta(days=7))
    assert [i["id"] for i in listing(db, who)[0]] == new
    assert listing(db, who, "archived")[0] == []
    assert counts(db, who) == unread(1)
    with db.factory() as session:
        assert session.scalar(select(func.count()).select_from(inbox.X)) == 0


def test_notifications_committed_during_mark_all_read_stay_unread(db: Database) -> None:
    """A writer holds uncommitted notifications on the user's and the role stream while the
    user marks all read (which then waits for the user stream's row, to append its
    inbox-updated); they commit after the watermarks were taken: they stay unread."""
    if not db.is_postgres:
        pytest.skip("SQLite runs one writer at a time: nothing commits during a mark")
    who = user(db)
    notify(db, f"user-{who.sub}", 2)
    notify(db, "clients", 2)
    writer = db.factory()
    writer.begin()
    late = append_rows(writer, [
        (stream, "notification", {"type": "info", "title": "late", "message": ""})
        for stream in ("clients", f"user-{who.sub}")])
    result: list[dict[str, Any]] = []
    marking = threading.Thread(target=lambda: result.append(mark(db, who, "read", all=True)))
    marking.start()
    marking.join(0.5)
    writer.commit()
    writer.close()
    marking.join(10)
    assert not marking.is_alive()
    assert result == [unread(0)]  # as of the mark
    assert counts(db, who) == unread(2)
    assert {i["id"] for i in listing(db, who, "unread")[0]} == {e.id for e in late}
