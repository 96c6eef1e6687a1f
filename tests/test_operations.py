"""Operators: a failing stream backs off, fails, is seen failed, and is retried once more.

The relay is driven here in the test process (as a worker runs it) against the real
PostgreSQL database, publishing through the real Redis to a real web node, with one
stream's publishes refused by a fault-injecting wrapper around the real publisher.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text, update

from app.core.db import make_session_factory, utcnow
from app.core.errors import InvalidInput, NotFound
from app.outbox import ops, writer
from app.outbox.relay import RelayPolicy, relay
from app.outbox.tables import RelayCursor
from testkit.clients import SocketClient, sentinel, user_token
from testkit.databases import Database
from testkit.marks import unmark
from testkit.ops import FaultyPublisher, LookedUp, herald_json, sweeps
from testkit.processes import WebNode
from testkit.system import System
from testkit.testrun import REDIS_URL

pytestmark = pytest.mark.anyio

CHANNEL_ENV = "HERALD_SOCKETIO_CHANNEL"


@pytest.fixture(scope="module")
def ops_web(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[WebNode]:
    """A real web node on the per-run PostgreSQL database (tables emptied by `pg_db`)."""
    node = WebNode({"DATABASE_URL": pg_url}, tmp_path_factory.mktemp("ops-web"))
    node.start()
    yield node
    node.stop()


def _append(db: Database, stream: str, n: int, start: int = 1) -> None:
    with db.factory() as session, session.begin():
        for i in range(start, start + n):
            writer.append(session, stream, "notification",
                          {"type": "info", "title": f"{stream} #{i}", "message": "m"})


def _cursor(db: Database, stream: str) -> RelayCursor:
    with db.factory() as session:
        cursor = session.get(RelayCursor, stream)
        assert cursor is not None
        session.expunge(cursor)
        return cursor


def _aware(value: datetime | None) -> datetime:
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=utcnow().tzinfo)


def _offsets(socket: SocketClient, stream: str) -> list[int]:
    return [e.meta["offset"] for e in socket.events if e.meta and e.meta.get("stream") == stream]


async def test_failing_stream_backs_off_fails_and_retry_delivers_it_once_in_order(
    pg_db: Database, ops_web: WebNode, tmp_path: Path
) -> None:
    bad, good = "project-901", "project-902"
    admin = user_token(pg_db.factory, "admin")
    with pg_db.factory() as session, session.begin():  # restorable: streams that exist
        for name in (bad, good):
            writer.ensure_stream(session, name)
    socket = SocketClient(ops_web.url, admin, positions={bad: {"offset": 0},
                                                         good: {"offset": 0}})
    await socket.connect()
    publisher = FaultyPublisher(REDIS_URL, os.environ[CHANNEL_ENV])
    publisher.failing[bad] = "ResponseError: injected refusal"
    policy = RelayPolicy(max_attempts=4, backoff=0.5, backoff_cap=60)
    clock = [utcnow()]  # the relay's "now", moved to each next attempt time
    http = httpx.Client(base_url=ops_web.url, timeout=10,
                        headers={"Authorization": f"Bearer {admin}"})
    try:
        _append(pg_db, bad, 3)
        delays: list[float] = []
        for attempt in range(1, policy.max_attempts + 1):
            _append(pg_db, good, 1, start=attempt)
            relay(session_factory=pg_db.factory, publisher=publisher, policy=policy,
                  clock=lambda: clock[0])
            cursor = _cursor(pg_db, bad)
            assert cursor.attempts == attempt and cursor.last_error is not None
            assert "injected refusal" in cursor.last_error
            # the other stream kept flowing: this round's event reached the client
            await socket.wait_for(lambda n=attempt: _offsets(socket, good) == list(
                range(1, n + 1)))
            if attempt < policy.max_attempts:
                assert cursor.state == "active"
                next_at = _aware(cursor.next_attempt_at)
                delays.append((next_at - clock[0]).total_seconds())
                # before its time the stream is not tried again
                before = publisher.calls
                relay(session_factory=pg_db.factory, publisher=publisher, policy=policy,
                      clock=lambda at=next_at: at - timedelta(milliseconds=1))
                assert publisher.calls == before and _cursor(pg_db, bad).attempts == attempt
                clock[0] = next_at
        assert all(later > earlier * 1.5 for earlier, later in itertools.pairwise(delays))
        assert delays[0] >= policy.backoff

        cursor = _cursor(pg_db, bad)
        assert cursor.state == "failed" and cursor.next_attempt_at is None
        # a failed stream waits for an operator, however much time passes
        relay(session_factory=pg_db.factory, publisher=publisher, policy=policy,
              clock=lambda: clock[0] + timedelta(days=1))
        assert _cursor(pg_db, bad).attempts == policy.max_attempts
        assert _offsets(socket, bad) == []

        [listed] = herald_json("outbox", "failed", database_url=pg_db.url)["streams"]
        assert listed["stream"] == bad and listed["attempts"] == policy.max_attempts
        assert "injected refusal" in listed["lastError"] and listed["pending"] == 3
        assert listed["failedAt"] is not None
        over_http = http.get("/api/admin/outbox/failed").json()["streams"]
        assert [(s["stream"], s["attempts"], s["pending"]) for s in over_http] == [
            (bad, policy.max_attempts, 3)]
        state = http.get("/api/admin/outbox").json()
        assert state["failedStreams"] == 1 and state["eventsPending"] == 3

        publisher.failing.clear()  # the cause is fixed; the operator retries
        answer = http.post("/api/admin/outbox/retry", json={"streams": [bad]})
        assert answer.status_code == 200 and answer.json() == {"retried": [bad], "healthy": []}
        cursor = _cursor(pg_db, bad)
        assert (cursor.state, cursor.attempts, cursor.next_attempt_at) == ("active", 0, None)
        relay(session_factory=pg_db.factory, publisher=publisher, policy=policy)
        await socket.wait_for(lambda: len(_offsets(socket, bad)) >= 3)
        relay(session_factory=pg_db.factory, publisher=publisher, policy=policy)
        await socket.call("heartbeat")  # anything still in flight arrives before the ack
        assert _offsets(socket, bad) == [1, 2, 3]
        assert _offsets(socket, good) == [1, 2, 3, 4]
        assert http.get("/api/admin/outbox").json()["eventsPending"] == 0
    finally:
        http.close()
        publisher.close()
        await socket.close()


def test_admin_outbox_api_needs_an_admin_and_a_valid_body(pg_db: Database,
                                                          ops_web: WebNode) -> None:
    with httpx.Client(base_url=ops_web.url, timeout=10) as http:
        assert http.get("/api/admin/outbox").status_code == 401
        tech = {"Authorization": f"Bearer {user_token(pg_db.factory, 'technician')}"}
        for method, path in [("GET", "/api/admin/outbox"), ("GET", "/api/admin/outbox/failed"),
                             ("POST", "/api/admin/outbox/retry")]:
            answer = http.request(method, path, headers=tech, json={"all": True})
            assert answer.status_code == 403, (path, answer.text)
            assert answer.json()["error"]["code"] == "forbidden"
        admin = {"Authorization": f"Bearer {user_token(pg_db.factory, 'admin')}"}
        for body in [{}, {"streams": []}, {"streams": ["user-1"], "all": True}, {"all": False},
                     {"streams": "user-1"}, {"streams": ["nonsense"]}]:
            answer = http.post("/api/admin/outbox/retry", headers=admin, json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert set(answer.json()["error"]) == {"code", "message"}
        answer = http.post("/api/admin/outbox/retry", headers=admin,
                           json={"streams": ["user-424242"]})
        assert answer.status_code == 404


def _fail(db: Database, stream: str, *, attempts: int, state: str) -> None:
    with db.factory() as session, session.begin():
        session.execute(update(RelayCursor).where(RelayCursor.stream == stream).values(
            attempts=attempts, state=state, last_error="boom", failed_at=utcnow()
            if state == "failed" else None,
            next_attempt_at=None if state == "failed" else utcnow() + timedelta(hours=1)))


def test_status_counts_pending_events_streams_behind_and_failures(db: Database) -> None:
    _append(db, "user-1", 3)
    _append(db, "user-2", 2)
    _append(db, "user-3", 1)
    with db.factory() as session, session.begin():  # user-3 relayed: at its head, unmarked
        session.execute(update(RelayCursor).where(RelayCursor.stream == "user-3")
                        .values(dispatched=1))
        unmark(session, "user-3")
    _fail(db, "user-2", attempts=8, state="failed")
    _fail(db, "user-1", attempts=2, state="active")
    with db.factory() as session:
        state = ops.status(session, now=utcnow() + timedelta(seconds=30))
    assert (state.events_pending, state.streams_behind) == (5, 2)
    assert (state.failed_streams, state.retrying_streams) == (1, 1)
    assert state.oldest_pending_age is not None and 30 <= state.oldest_pending_age < 60
    assert {s.stream: (s.pending, s.state, s.attempts) for s in state.streams} == {
        "user-1": (3, "active", 2), "user-2": (2, "failed", 8)}
    assert state.streams[0].stream == "user-2"  # failed streams first


def test_retry_all_takes_failed_and_waiting_streams_and_unknown_names_change_nothing(
    db: Database,
) -> None:
    for name in ("user-1", "user-2", "user-3"):
        _append(db, name, 1)
    _fail(db, "user-1", attempts=8, state="failed")
    _fail(db, "user-2", attempts=3, state="active")
    with pytest.raises(NotFound):
        ops.retry(db.factory, streams=["user-1", "user-77"])
    assert _cursor(db, "user-1").state == "failed"
    with pytest.raises(InvalidInput):
        ops.retry(db.factory, streams=["user-1"], all_failed=True)
    nudged: list[list[str]] = []
    nudging = make_session_factory(db.engine, nudge=nudged.append)
    assert ops.retry(nudging, all_failed=True).retried == ["user-1", "user-2"]
    assert nudged == [["user-1", "user-2"]]
    with db.factory() as session:
        rows = session.execute(select(RelayCursor.stream, RelayCursor.state,
                                      RelayCursor.attempts, RelayCursor.next_attempt_at)
                               .order_by(RelayCursor.stream)).all()
    assert [tuple(r) for r in rows] == [("user-1", "active", 0, None),
                                       ("user-2", "active", 0, None),
                                       ("user-3", "active", 0, None)]
    assert ops.retry(db.factory, all_failed=True) == ops.Retried(retried=[], healthy=[])


def test_failed_streams_are_listed_and_retried_in_chunks_so_any_number_fits_a_statement(
    db: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A list of names goes as a parameter each, and PostgreSQL takes at most 65,535:
    `retry --all` after Redis refused 70,000 streams failed with "number of parameters
    must be between 0 and 65535". Here chunks of 3 over 8 failed streams: listed (longest
    failed first), then retried by name and all."""
    monkeypatch.setattr(ops.common, "CHUNK", 3)
    names = [f"user-{k}" for k in range(1, 9)]
    for name in names:
        _append(db, name, 1)
        _fail(db, name, attempts=8, state="failed")
    with db.factory() as session:
        assert [s.stream for s in ops.failed(session)] == names  # in the order they failed
        assert [s.stream for s in ops.status(session).streams] == names
    _append(db, "user-9", 1)  # healthy
    retried = ops.retry(db.factory, streams=[*names[:7], "user-9"])
    assert retried == ops.Retried(retried=sorted(names[:7]), healthy=["user-9"])
    _fail(db, "user-1", attempts=8, state="failed")
    assert ops.retry(db.factory, all_failed=True).retried == ["user-1", "user-8"]
    assert {_cursor(db, name).state for name in names} == {"active"}


def test_the_status_and_the_failed_list_read_a_page_of_failed_streams_however_many_failed(
    pg_db: Database,
) -> None:
    """5,000 failed streams (as a Redis refusing every channel leaves them; 70,000 made the
    status take a second when it looked up every one) and 100 streams behind: the status
    lists the 100 longest failed and the failed list its 1,000, each from a page of the
    failed cursors (`ix_relay_cursors_failed`); the oldest pending event is still found
    among the failed streams."""
    failed, active = 5000, 100
    with pg_db.engine.begin() as conn:  # failed user-g: g seconds ago, its events 2g ago
        for statement in (
                "INSERT INTO streams (name, epoch, head, pruned_through, created_at) "
                "SELECT 'user-' || g, 'e', 2, 0, now() FROM generate_series(1, :n) g",
                "INSERT INTO relay_cursors (stream, dispatched, state, attempts, failed_at) "
                "SELECT 'user-' || g, 0, CASE WHEN g <= :f THEN 'failed' ELSE 'active' END, "
                "CASE WHEN g <= :f THEN 8 ELSE 0 END, "
                "CASE WHEN g <= :f THEN now() - g * interval '1 s' END "
                "FROM generate_series(1, :n) g",
                'INSERT INTO events (id, stream, "offset", type, payload, created_at) '
                "SELECT gen_random_uuid()::text, 'user-' || g, o, 'x', '{}', "
                "now() - (CASE WHEN g <= :f THEN 2 * g ELSE g - :f END) * interval '1 s' "
                "FROM generate_series(1, :n) g, "
                "generate_series(1, 2) o",
                "INSERT INTO pending_streams (name, head, epoch, since, not_before) "
                "SELECT 'user-' || g, 2, 'e', "
                "now() - (CASE WHEN g <= :f THEN 2 * g ELSE g - :f END) * interval '1 s', "
                "CASE WHEN g <= :f THEN '9999-12-31'::timestamptz END "
                "FROM generate_series(1, :n) g"):
            conn.execute(text(statement), {"n": failed + active, "f": failed})
    # Analysed, as autovacuum leaves a database after 5,000 failures: unanalysed, the plan
    # of the failed page depends on whether autovacuum came by meanwhile (a sort of every
    # failed cursor when the planner counted one, in some orders of the suite's files).
    pg_db.analyse()
    with LookedUp(pg_db.engine) as looked_up, pg_db.factory() as session:
        state = ops.status(session, limit=100)
        status_looked_up, looked_up.rows = looked_up.rows, 0
        assert session.scalar(text(  # in this transaction
            "SELECT pg_stat_get_xact_numscans('ix_relay_cursors_failed'::regclass)")) == 1
        listed = ops.failed(session, limit=1000)
    assert (state.failed_streams, state.streams_behind) == (failed, failed + active)
    assert [s.stream for s in state.streams] == [f"user-{g}" for g in range(5000, 4900, -1)]
    assert state.oldest_pending_age is not None and 9990 < state.oldest_pending_age < 10100
    assert [s.stream for s in listed] == [f"user-{g}" for g in range(5000, 4000, -1)]
    # a page of failed streams and a page of the walk (16 marks of each kind), of 5,100
    assert status_looked_up <= 100 + 2 * 16
    assert looked_up.rows == 1000


def test_the_failed_list_reads_a_page_of_failed_cursors_when_statistics_count_none_failed(
    pg_db: Database,
) -> None:
    """Analysed while every stream was healthy, then 5,000 failed (an incident; at a
    million streams autovacuum analyses again only after 100,000 changed rows): the
    failed list still reads a page of the failed cursors in failure order, not every
    failed cursor sorted (5,003 index entries read for a page of 100 before
    `db.planned`), and the transaction's planner settings are as they were."""
    streams, limit = 5000, 100
    with pg_db.engine.begin() as conn:
        for statement in (
                "INSERT INTO streams (name, epoch, head, pruned_through, created_at) "
                "SELECT 'user-' || g, 'e', 2, 0, now() FROM generate_series(1, :n) g",
                "INSERT INTO relay_cursors (stream, dispatched, state, attempts) "
                "SELECT 'user-' || g, 0, 'active', 0 FROM generate_series(1, :n) g",
                "INSERT INTO pending_streams (name, head, epoch, since) "
                "SELECT 'user-' || g, 2, 'e', now() FROM generate_series(1, :n) g"):
            conn.execute(text(statement), {"n": streams})
    pg_db.analyse()
    with pg_db.engine.begin() as conn:  # user-g failed g seconds ago
        conn.execute(text(
            "UPDATE relay_cursors SET state = 'failed', attempts = 8, last_error = 'refused', "
            "failed_at = now() - substr(stream, 6)::int * interval '1 s'"))
        conn.execute(text("UPDATE pending_streams SET not_before = '9999-12-31'"))
    read = text("SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index "
                "WHERE indrelid = 'relay_cursors'::regclass")  # in this transaction
    with pg_db.factory() as session:
        listed = ops.failed(session, limit=limit)
        assert session.scalar(read) <= 2 * limit  # the page, then the rows of its streams
        assert session.scalar(text("SELECT current_setting('enable_sort')")) == "on"
    assert [s.stream for s in listed] == [f"user-{g}" for g in range(5000, 4900, -1)]


async def test_retry_over_http_hands_a_failed_stream_back_to_the_real_workers(
    pg_system: System,
) -> None:
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    with pg_system.factory() as session, session.begin():  # as if its publishes had failed
        writer.ensure_stream(session, stream)
        session.execute(update(RelayCursor).where(RelayCursor.stream == stream).values(
            state="failed", attempts=8, last_error="ResponseError: refused", failed_at=utcnow()))
    socket = SocketClient(pg_system.url, client_token)
    await socket.connect()
    try:
        assert (await socket.call("join-project", project))["ok"] is True
        for progress in (10, 20):
            api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
        # the client's notifications flow; the failed stream waits for an operator
        await socket.wait_count("notification", 2)
        await asyncio.to_thread(sweeps, 2)  # a whole sweep of the real worker went by
        await sentinel(api, socket, client_id)  # behind anything that sweep published
        assert socket.named("project-updated") == []
        assert api.ok("GET", "/api/admin/outbox")["failedStreams"] == 1

        assert api.ok("POST", "/api/admin/outbox/retry", json={"all": True}) == {
            "retried": [stream], "healthy": []}
        await socket.wait_count("project-updated", 2)
        await socket.call("heartbeat")
        assert [e.payload["progress"] for e in socket.named("project-updated")] == [10, 20]
        assert _offsets(socket, stream) == [1, 2]
    finally:
        await socket.close()
