"""The write path's fast paths (issue 11): one statement per stream, one statement in
autocommit for a single stream, PATCH in one UPDATE, remembered tokens, idle-only pings.
Each keeps what the slow path kept: gapless per-stream offsets in list order, all or
nothing, the same refusals, the nudge after the commit only."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Text as SqlText
from sqlalchemy import cast, select, text
from sqlalchemy import event as sa_event

from app.core import db as core_db
from app.core.errors import AuthError, InvalidInput
from app.core.jsoncodec import loads
from app.outbox import writer
from app.outbox.publish import EventSpec, publish_alone, publish_many
from app.outbox.tables import Event, PendingStream, RelayCursor, Stream
from app.portal import auth
from app.portal.models import Project, User
from testkit.clients import token
from testkit.databases import Database, wait_for_a_lock_wait
from testkit.eventually import eventually
from testkit.marks import unmark
from testkit.testrun import SECRET
from testkit.world import World


def _offsets(database: Database, stream: str) -> list[int]:
    with database.factory() as session:
        return list(session.scalars(select(Event.offset).where(Event.stream == stream)
                                    .order_by(Event.offset)))


def _stored(database: Database, stream: str) -> list[tuple[int, str, Any]]:
    """(offset, type, payload) as the relay reads them: the payload's text, decoded."""
    with database.factory() as session:
        rows = session.execute(select(Event.offset, Event.type, cast(Event.payload, SqlText))
                               .where(Event.stream == stream).order_by(Event.offset)).all()
    return [(offset, type_, loads(payload)) for offset, type_, payload in rows]


def test_a_batch_mixing_streams_gets_consecutive_offsets_per_stream_in_list_order(
        db: Database) -> None:
    with db.factory() as session, session.begin():
        writer.append(session, "admins", "seed", {})  # admins exists; clients does not yet
    specs = [EventSpec(stream, "step", {"n": i})
             for i, stream in enumerate(["clients", "admins", "clients", "user-7", "admins",
                                         "clients"])]
    with db.factory() as session, session.begin():
        published = publish_many(session, specs)
    got = [(p.event.stream, p.event.offset) for p in published]
    assert got == [("clients", 1), ("admins", 2), ("clients", 2), ("user-7", 1),
                   ("admins", 3), ("clients", 3)]
    assert [(o, p["n"]) for o, _t, p in _stored(db, "clients")] == [(1, 0), (2, 2), (3, 5)]
    assert [(o, p.get("n")) for o, _t, p in _stored(db, "admins")] == [(1, None), (2, 1),
                                                                      (3, 4)]
    with db.factory() as session:
        epochs = {name: epoch for name, epoch in session.execute(select(Stream.name, Stream.epoch))}
    assert all(p.event.epoch == epochs[p.event.stream] for p in published)


def test_payloads_are_stored_as_given(db: Database) -> None:
    """The data is encoded once and stored as that text: whatever JSON holds comes back."""
    data = [{"quote": 'say "hi"', "backslash": "a\\b", "unicode": "é 漢 🎉", "nul": "a\x00b",
             "looks": "NaN Infinity", "big": 2**70, "neg": -1.5e-7, "nested": {"a": [1, [2]]},
             "empty": {}, "list": [], "null": None, "bool": True},
            {}]
    with db.factory() as session, session.begin():
        for item in data:
            writer.append(session, "technicians", "odd", item)
    assert [p for _o, _t, p in _stored(db, "technicians")] == data


def test_encoded_data_is_the_standard_librarys_compact_text_and_its_refusals_stay() -> None:
    """encode_data (its encoder made once, no cycle check) writes what
    json.dumps(separators=(",", ":"), ensure_ascii=False) writes, and refuses the same."""
    import json

    flat = {"quote": 'say "hi"', "unicode": "é 漢 🎉", "ctl": "a\x00\n\x1fb", "big": 2**70,
            "float": -1.5e-7, "huge": 1e300, "int": 3, "null": None, "bool": False}
    nested = {"a": [1, [2, {"b": [True, None, 1.0]}]], "empty": {}, "list": [], "flat": flat}
    for data in (flat, nested, {}, {"nan": float("nan"), "inf": float("-inf")}):
        assert writer.encode_data(data) == json.dumps(data, separators=(",", ":"),
                                                       ensure_ascii=False)
    circular: dict[str, Any] = {"a": []}
    circular["a"].append(circular)
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(writer.MAX_DATA_DEPTH):
        cursor["x"] = {}
        cursor = cursor["x"]
    refused = [({"a": {1, 2}}, "not JSON"), ({"a": "\ud800"}, "not JSON"),
               ({"a": object()}, "not JSON"), (circular, "nests more"), (deep, "nests more"),
               ([1], "JSON object")]
    for data, message in refused:
        with pytest.raises(InvalidInput, match=message):
            writer.encode_data(data)


def test_a_batchs_stream_check_refuses_exactly_what_parsing_the_name_refuses() -> None:
    from app.core.ids import MAX_ID
    from app.outbox.streams import check_stream, parse_stream

    names: list[object] = [
        "user-1", "project-42", "ticket-7", "clients", "technicians", "admins",
        f"user-{MAX_ID}", f"user-{MAX_ID + 1}", "user-0", "user-01", "user-1\n", "User-1",
        "room-1", "user-", "", "admin", "user-1 ", "user--1", 7, None, b"user-1"]
    for name in names:
        try:
            parse_stream(name)
            parsed = None
        except InvalidInput as exc:
            parsed = exc.message
        try:
            check_stream(name)
            checked = None
        except InvalidInput as exc:
            checked = exc.message
        assert checked == parsed, name


def test_a_rolled_back_batch_leaves_no_event_no_offset_and_no_nudge(db: Database) -> None:
    nudged: list[list[str]] = []
    with db.factory() as session, session.begin():
        writer.append(session, "admins", "seed", {}, nudge=nudged.append)
    assert nudged == [["admins"]]
    with pytest.raises(RuntimeError), db.factory() as session, session.begin():
        writer.append_rows(session, [("admins", "x", {}), ("clients", "x", {})],
                           nudge=nudged.append)
        raise RuntimeError("the caller fails after appending")
    assert nudged == [["admins"]]
    with db.factory() as session, session.begin():
        writer.append_rows(session, [("clients", "x", {}), ("admins", "x", {})],
                           nudge=nudged.append)
    assert nudged == [["admins"], ["admins", "clients"]]
    assert _offsets(db, "admins") == [1, 2]
    assert _offsets(db, "clients") == [1]


def test_publish_alone_takes_any_batch_without_keys_and_commits_it_by_itself(
        pg_db: Database) -> None:
    one = [EventSpec("project-5", "x", {"i": i}) for i in range(3)]
    payloads = ['{"i":0}', '{"i":1}', '{"i":2}']
    published = publish_alone(pg_db.engine, one, payloads)  # a new stream: made on the way
    assert published is not None
    assert [(p.event.offset, p.event.payload, p.created) for p in published] == [
        (1, {"i": 0}, True), (2, {"i": 1}, True), (3, {"i": 2}, True)]
    assert _stored(pg_db, "project-5") == [(1, "x", {"i": 0}), (2, "x", {"i": 1}),
                                           (3, "x", {"i": 2})]  # committed by itself
    two = [EventSpec("project-5", "x", {}), EventSpec("project-6", "x", {})]
    published = publish_alone(pg_db.engine, two, ["{}", "{}"])  # one new, one not
    assert published is not None
    assert [(p.event.stream, p.event.offset) for p in published] == [("project-5", 4),
                                                                     ("project-6", 1)]
    keyed = [EventSpec("project-5", "x", {}, idempotency_key="k")]
    assert publish_alone(pg_db.engine, keyed, ["{}"]) is None  # a key: claimed in a transaction
    assert _offsets(pg_db, "project-5") == [1, 2, 3, 4]
    assert _offsets(pg_db, "project-6") == [1]


def _mixed_batch(tag: str) -> list[EventSpec]:
    """Events over existing streams (project-1, project-2) and new ones (ticket-1..3),
    interleaved: each stream's events in the order of their `i`."""
    streams = ["ticket-2", "project-2", "ticket-1", "project-1", "ticket-2", "ticket-3",
               "project-2", "ticket-1", "project-1", "ticket-2"]
    return [EventSpec(stream, "step", {"w": tag, "i": i}) for i, stream in enumerate(streams)]


@pytest.mark.parametrize("path", ["alone", "transaction"])
def test_a_batch_over_new_and_existing_streams_keeps_each_streams_order_and_marks_it_pending(
        pg_db: Database, path: str) -> None:
    with pg_db.factory() as session, session.begin():
        writer.append_rows(session, [("project-1", "seed", {}), ("project-2", "seed", {})])
        unmark(session)  # as a caught-up relay leaves them
    specs = _mixed_batch(path)
    if path == "alone":
        published = publish_alone(pg_db.engine, specs, [writer.encode_data(s.data)
                                                        for s in specs])
        assert published is not None
    else:
        with pg_db.factory() as session, session.begin():
            published = publish_many(session, specs)
    got = [(p.event.stream, p.event.offset, p.event.payload["i"]) for p in published]
    assert got == [("ticket-2", 1, 0), ("project-2", 2, 1), ("ticket-1", 1, 2),
                   ("project-1", 2, 3), ("ticket-2", 2, 4), ("ticket-3", 1, 5),
                   ("project-2", 3, 6), ("ticket-1", 2, 7), ("project-1", 3, 8),
                   ("ticket-2", 3, 9)]
    for stream in ("project-1", "project-2", "ticket-1", "ticket-2", "ticket-3"):
        mine = [(o, p["i"]) for o, _t, p in _stored(pg_db, stream) if "i" in p]
        assert mine == [(o, i) for s, o, i in got if s == stream]
    with pg_db.factory() as session:
        streams = {name: (int(head), epoch) for name, head, epoch
                   in session.execute(select(Stream.name, Stream.head, Stream.epoch))}
        marks = {name: (int(head), epoch) for name, head, epoch
                 in session.execute(select(PendingStream.name, PendingStream.head,
                                           PendingStream.epoch))}
        cursors = dict(session.execute(select(RelayCursor.stream, RelayCursor.dispatched)).all())
    assert {name: head for name, (head, _e) in streams.items()} == {
        "project-1": 3, "project-2": 3, "ticket-1": 2, "ticket-2": 3, "ticket-3": 1}
    assert marks == streams  # each marked pending at its head, with its epoch
    assert cursors == {name: 0 for name in streams}  # every new stream has its relay cursor
    assert all(p.event.epoch == streams[p.event.stream][1] for p in published)
    assert all(len(e) == 16 for _h, e in streams.values())


@pytest.mark.parametrize("path", ["alone", "transaction"])
def test_a_new_stream_made_meanwhile_by_another_writer_loses_no_event_and_no_order(
        pg_db: Database, path: str) -> None:
    """Another transaction makes ticket-2 while the batch runs (its insert waits for that
    commit): alone, the batch writes nothing and says so (the caller takes the transaction);
    in a transaction, ticket-2 is appended after the other's event, in the batch's order."""
    with pg_db.factory() as session, session.begin():
        writer.append_rows(session, [("project-1", "seed", {}), ("project-2", "seed", {})])
    specs = _mixed_batch(path)
    other = pg_db.factory()
    other.begin()
    writer.append(other, "ticket-2", "other", {})  # made, not committed yet
    with ThreadPoolExecutor(1) as pool:
        if path == "alone":
            future: Any = pool.submit(publish_alone, pg_db.engine, specs,
                                      [writer.encode_data(s.data) for s in specs])
        else:
            def in_a_transaction() -> list[Any]:
                with pg_db.factory() as session, session.begin():
                    return publish_many(session, specs)
            future = pool.submit(in_a_transaction)
        wait_for_a_lock_wait(pg_db)
        other.commit()
        other.close()
        published = future.result(timeout=30)
    if path == "alone":
        assert published is None
        assert [p["i"] for _o, _t, p in _stored(pg_db, "project-1") if "i" in p] == []
        assert _offsets(pg_db, "ticket-1") == [] and _offsets(pg_db, "ticket-2") == [1]
        return
    assert [(p.event.offset, p.event.payload["i"]) for p in published
            if p.event.stream == "ticket-2"] == [(2, 0), (3, 4), (4, 9)]
    assert [(o, t) for o, t, _p in _stored(pg_db, "ticket-2")] == [
        (1, "other"), (2, "step"), (3, "step"), (4, "step")]
    assert [(o, p["i"]) for o, _t, p in _stored(pg_db, "ticket-1")] == [(1, 2), (2, 7)]
    assert [(o, p.get("i")) for o, _t, p in _stored(pg_db, "project-1")] == [(1, None),
                                                                            (2, 3), (3, 8)]


def test_a_batch_over_existing_streams_waits_for_a_writer_holding_one_and_appends_after_it(
        pg_db: Database) -> None:
    """A batch alone over streams that all exist finds each row once and raises its head
    at that row. Another writer holds project-2 and commits a new version of its row while
    the batch waits for it: the batch locks that newest version, which its snapshot does
    not see at that address, and still appends after the other's event, in its order."""
    with pg_db.factory() as session, session.begin():
        writer.append_rows(session, [("project-1", "seed", {}), ("project-2", "seed", {}),
                                     ("project-3", "seed", {})])
    specs = [EventSpec(stream, "step", {"i": i}) for i, stream in enumerate(
        ["project-3", "project-2", "project-1", "project-2", "project-3"])]
    other = pg_db.factory()
    other.begin()
    writer.append(other, "project-2", "other", {})  # holds the row, not committed yet
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(publish_alone, pg_db.engine, specs,
                             [writer.encode_data(s.data) for s in specs])
        wait_for_a_lock_wait(pg_db)
        other.commit()
        other.close()
        published = future.result(timeout=30)
    assert published is not None
    assert [(p.event.stream, p.event.offset) for p in published] == [
        ("project-3", 2), ("project-2", 3), ("project-1", 2), ("project-2", 4),
        ("project-3", 3)]
    assert [(o, t) for o, t, _p in _stored(pg_db, "project-2")] == [
        (1, "seed"), (2, "other"), (3, "step"), (4, "step")]
    with pg_db.factory() as session:
        heads = dict(session.execute(select(Stream.name, Stream.head)).all())
        marks = dict(session.execute(select(PendingStream.name, PendingStream.head)).all())
    assert heads == marks == {"project-1": 2, "project-2": 4, "project-3": 3}


def test_a_batch_alone_over_new_streams_only_makes_them_in_one_statement_or_writes_nothing(
        pg_db: Database) -> None:
    """A batch alone whose streams are all new makes them in its first statement; if
    another writer makes one of them meanwhile (its insert waits for that commit), the
    batch writes nothing and says so: the caller then takes the transaction."""
    specs = [EventSpec(stream, "step", {"i": i}) for i, stream in enumerate(
        ["ticket-2", "ticket-1", "ticket-2"])]
    statements: list[str] = []
    with pg_db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        sa_event.listen(conn, "before_cursor_execute",
                        lambda *args: statements.append(args[2]))
        records = writer.append_whole(conn, [(s.stream, s.type, s.data) for s in specs],
                                      writer.new_event_ids(3), ["{}"] * 3)
    assert [(r.stream, r.offset) for r in records] == [("ticket-2", 1), ("ticket-1", 1),
                                                       ("ticket-2", 2)]
    assert statements == [writer.EXISTING_SQL]
    with pg_db.factory() as session:
        assert dict(session.execute(select(RelayCursor.stream, RelayCursor.dispatched)).all()) == {
            "ticket-1": 0, "ticket-2": 0}
        assert dict(session.execute(select(PendingStream.name, PendingStream.head)).all()) == {
            "ticket-1": 1, "ticket-2": 2}
    other = pg_db.factory()
    other.begin()
    writer.append(other, "ticket-4", "other", {})  # made, not committed yet
    later = [EventSpec("ticket-3", "step", {}), EventSpec("ticket-4", "step", {})]
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(publish_alone, pg_db.engine, later, ["{}", "{}"])
        wait_for_a_lock_wait(pg_db)
        other.commit()
        other.close()
        assert future.result(timeout=30) is None
    assert _offsets(pg_db, "ticket-3") == [] and _offsets(pg_db, "ticket-4") == [1]


def test_a_batch_over_existing_streams_looks_each_stream_up_once(pg_db: Database) -> None:
    """At a million streams each walk of `pk_streams` is a random leaf and row: the batch
    walks it once per stream to lock it (then raises the head at the row found), and once
    per event for the foreign key's check; not also to see whether the stream exists and
    again to raise its head."""
    names = [f"user-{g}" for g in range(1, 201)]
    with pg_db.factory() as session, session.begin():
        writer.append_rows(session, [(name, "seed", {}) for name in names])
    specs = [EventSpec(name, "step", {}) for name in names]
    walks = text("SELECT pg_stat_get_xact_numscans('pk_streams'::regclass)")
    with pg_db.engine.connect() as conn, conn.begin():  # the counts of this transaction
        conn.execute(text("SET LOCAL enable_hashjoin = off"))  # the plans at a million
        conn.execute(text("SET LOCAL enable_mergejoin = off"))  # streams, not at 200
        before = conn.execute(walks).scalar()
        records = writer.append_whole(conn, [(s.stream, s.type, s.data) for s in specs],
                                      writer.new_event_ids(len(specs)), ["{}"] * len(specs))
        after = conn.execute(walks).scalar()
    assert [r.offset for r in records] == [2] * len(names)
    assert after - before <= 2 * len(names), f"{after - before} walks for {len(names)} streams"


def test_batches_alone_in_transactions_and_single_appends_on_one_stream_stay_gapless(
        pg_db: Database) -> None:
    """Writers of every path at once on one stream: offsets 1..N, each batch's events
    consecutive and in its list order."""
    stream, rounds, size = "project-3", 12, 20
    with pg_db.factory() as session, session.begin():
        writer.ensure_stream(session, stream)
    start = threading.Barrier(3)

    def batches_alone(tag: str) -> list[list[int]]:
        start.wait()
        out = []
        for r in range(rounds):
            specs = [EventSpec(stream, "b", {"w": tag, "r": r, "i": i}) for i in range(size)]
            published = publish_alone(pg_db.engine, specs, [writer.encode_data(s.data)
                                                            for s in specs])
            assert published is not None
            out.append([p.event.offset for p in published])
        return out

    def batches_in_transactions(tag: str) -> list[list[int]]:
        start.wait()
        out = []
        for r in range(rounds):
            specs = [EventSpec(stream, "b", {"w": tag, "r": r, "i": i}) for i in range(size)]
            specs.insert(size // 2, EventSpec("clients", "b", {"w": tag}))
            with pg_db.factory() as session, session.begin():
                published = publish_many(session, specs)
            out.append([p.event.offset for p in published if p.event.stream == stream])
        return out

    def singles(tag: str) -> list[list[int]]:
        start.wait()
        out = []
        for r in range(rounds * 4):
            with pg_db.factory() as session, session.begin():
                out.append([writer.append(session, stream, "s", {"w": tag, "r": r}).offset])
        return out

    with ThreadPoolExecutor(3) as pool:
        results = [pool.submit(f, f.__name__) for f in (batches_alone, batches_in_transactions,
                                                       singles)]
        handed = [offsets for future in results for offsets in future.result()]
    total = 2 * rounds * size + rounds * 4
    assert _offsets(pg_db, stream) == list(range(1, total + 1))
    assert sorted(o for offsets in handed for o in offsets) == list(range(1, total + 1))
    for offsets in handed:
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    stored = _stored(pg_db, stream)
    for tag in ("batches_alone", "batches_in_transactions"):  # each batch in its list order
        for r in range(rounds):
            mine = [p["i"] for _o, _t, p in stored if p.get("w") == tag and p["r"] == r]
            assert mine == list(range(size))


def test_a_remembered_token_still_expires_and_a_refused_one_is_never_remembered() -> None:
    good = token(42, "client", ttl=timedelta(seconds=2))
    who = auth.decode_cached(good, secret=SECRET)
    assert (who.sub, who.role) == ("42", "client")
    assert auth.decode_cached(good, secret=SECRET) is who  # remembered
    with pytest.raises(AuthError):  # another secret: checked again, and refused
        auth.decode_cached(good, secret="another-secret-that-is-long-enough-0123456789")
    def refused() -> AuthError | None:
        try:
            auth.decode_cached(good, secret=SECRET)
        except AuthError as error:
            return error
        return None

    assert eventually(refused, "the remembered token never expired", 10).code == "token_expired"
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(AuthError):
            auth.decode_cached(forged, secret=SECRET)
    with pytest.raises(AuthError):
        auth.decode_cached(None, secret=SECRET)


@pytest.mark.parametrize("idle", [0.0, 3600.0])
def test_a_pooled_connection_whose_server_side_died_is_replaced_before_use(
        pg_db: Database, monkeypatch: pytest.MonkeyPatch, idle: float) -> None:
    """Idle PING_IDLE seconds or more: pinged. Used moments ago: pinged only if its socket
    has input waiting — which a server that ends the session (a restart, a terminated
    backend) always leaves — so either way the request never meets the dead one."""
    monkeypatch.setattr(core_db, "PING_IDLE", idle)
    engine = core_db.make_engine(pg_db.url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.connect() as conn:  # alive, nothing waiting: the same connection
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid
        with pg_db.engine.connect() as admin:
            # Each statement its own transaction: pg_stat_activity is read once per
            # transaction and kept, so polling it in one would never see the backend go.
            admin.execution_options(isolation_level="AUTOCOMMIT")
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            eventually(lambda: not admin.execute(  # the backend is gone
                text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).first(),
                "the backend was not terminated", 10)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        engine.dispose()


# --- over HTTP, on the real system -------------------------------------------------------

def test_one_event_to_a_new_stream_then_to_it_again(world: World) -> None:
    """The first event of a stream takes the transaction (the stream is created), the
    next the single statement: offsets 1 and 2, the same answer's shape."""
    stream = f"ticket-{world.fresh_ticket() + 10_000}"
    answers = []
    for i in range(3):
        response = world.api.request("POST", "/api/events", world.token("service"),
                                     json={"stream": stream, "type": "t", "data": {"i": i}})
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/json"
        answers.append(response.json())
    assert [(a["stream"], a["offset"], a["duplicate"]) for a in answers] == [
        (stream, 1, False), (stream, 2, False), (stream, 3, False)]
    assert all(set(a) == {"id", "stream", "offset", "duplicate"} for a in answers)


@pytest.mark.parametrize("role,status,code", [
    ("admin", 200, None), ("technician", 200, None), ("other-technician", 404, "not_found"),
    ("client", 403, "forbidden"), ("service", 404, "not_found")])
def test_patch_checks_the_caller_in_its_update(world: World, role: str, status: int,
                                               code: str | None) -> None:
    before = _project_events(world)
    response = world.api.request("PATCH", f"/api/projects/{world.project}", world.token(role),
                                 json={"progress": 41, "status": "busy"})
    assert response.status_code == status, response.text
    after = _project_events(world)
    if code is not None:
        assert response.json()["error"]["code"] == code
        assert after == before
        return
    body = response.json()
    assert body == {"id": world.project, "name": body["name"], "clientId": world.ids["client"],
                    "technicianIds": [world.ids["technician"]], "progress": 41,
                    "status": "busy"}
    assert after[0] == before[0] + 1 and after[1] == before[1] + 1
    with world.system.factory() as session:
        last = session.scalars(select(Event).where(Event.stream == f"project-{world.project}")
                               .order_by(Event.offset.desc())).first()
        note = session.scalars(select(Event).where(
            Event.stream == f"user-{world.ids['client']}").order_by(Event.offset.desc())).first()
    assert last is not None and last.payload == {"projectId": world.project, "progress": 41,
                                                 "status": "busy"}
    assert note is not None and note.type == "notification"
    assert note.payload == {"type": "info", "title": "Project updated",
                            "message": f"{body['name']}: 41% (busy)"}


def test_patch_of_a_missing_project_is_404_and_of_a_gone_user_401(world: World) -> None:
    missing = world.api.request("PATCH", "/api/projects/999999", world.token("admin"),
                                json={"progress": 1})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    with world.system.factory() as session, session.begin():
        gone = User(email=f"gone-{time.monotonic_ns()}@test", role="admin", name="gone")
        session.add(gone)
        session.flush()
        gone_id = gone.id
        changed = User(email=f"changed-{time.monotonic_ns()}@test", role="client", name="c")
        session.add(changed)
        session.flush()
        changed_id = changed.id
    with world.system.factory() as session, session.begin():
        session.delete(session.get(User, gone_id))
    before = _project_events(world)
    for who, role in ((gone_id, "admin"), (changed_id, "technician")):
        for project in (world.project, 999999):  # the caller's row first, as before
            refused = world.api.request("PATCH", f"/api/projects/{project}", token(who, role),
                                        json={"progress": 2})
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"] == "token_invalid"
    assert _project_events(world) == before
    with world.system.factory() as session:
        project = session.get(Project, world.project)
        assert project is not None and project.progress != 2


def _project_events(world: World) -> tuple[int, int]:
    with world.system.factory() as session:
        return (len(session.scalars(select(Event.id).where(
                    Event.stream == f"project-{world.project}")).all()),
                len(session.scalars(select(Event.id).where(
                    Event.stream == f"user-{world.ids['client']}")).all()))
