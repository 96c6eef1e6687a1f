"""Connects read together (app/gateway/connects.py), and what an idle or closed socket keeps.

Connects that arrive while a read is under way share one transaction: each must still get
its own user's answer (a deleted user or a changed role refused, never cached), its own
streams' heads and its own `connected` payload; one failing request must not fail the
others. A closed socket must leave nothing behind (its session, engine.io socket and locks
are collected).
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import engineio
import pytest
import socketio
import uvicorn
from sqlalchemy import delete, event, update
from sqlalchemy.orm import Session

from app.core.errors import AuthError
from app.gateway import direct
from app.gateway.connects import ConnectReader
from app.gateway.server import Gateway
from app.gateway.sio import LeanQueue, SessionIds
from app.outbox.streams import user_stream
from app.outbox.tables import Stream
from app.outbox.writer import append
from app.portal import projects
from app.portal.auth import Principal
from app.portal.models import User
from testkit.clients import SocketClient, token
from testkit.eventually import eventually_async
from testkit.processes import free_port
from testkit.system import System
from testkit.testrun import fresh_name

pytestmark = pytest.mark.anyio


def make_users(system: System, count: int, role: str = "client") -> list[int]:
    tag = uuid.uuid4().hex[:8]
    with system.factory() as session, session.begin():
        return [projects.create_user(session, email=f"c{i}-{tag}@test", role=role,
                                     name=f"name {i}").id for i in range(count)]


def who(user_id: int, role: str = "client") -> Principal:
    return Principal(sub=str(user_id), email=f"{user_id}@test", role=role)


def readable(_session: Session, _who: Principal, _name: str) -> bool:
    return True


def auto(user_id: int) -> list[str]:
    return [user_stream(user_id), "clients"]


# -- the reader, against PostgreSQL -------------------------------------------------------

async def test_concurrent_connects_share_transactions_and_each_get_their_own(
        pg_system: System) -> None:
    users = make_users(pg_system, 30)
    with pg_system.factory() as session, session.begin():  # different heads per user
        for i, uid in enumerate(users[:5]):
            for _ in range(i + 1):
                append(session, user_stream(uid), "notification", {"n": i})
    reader = ConnectReader(pg_system.factory, readable, parallel=1)
    loaded = await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users))
    assert reader.loaded == 30
    assert reader.batches < 30  # the first alone, the rest together
    for i, (uid, got) in enumerate(zip(users, loaded, strict=True)):
        assert got.name == f"name {i}"
        assert list(got.auto) == [user_stream(uid), "clients"]
        assert got.auto[user_stream(uid)].stream == user_stream(uid)
        assert got.auto[user_stream(uid)].offset == (i + 1 if i < 5 else 0)
        assert got.restored == {}


async def test_a_deleted_user_in_a_batch_is_refused_alone(pg_system: System) -> None:
    users = make_users(pg_system, 6)
    with pg_system.factory() as session, session.begin():
        session.execute(delete(User).where(User.id == users[2]))
        session.execute(update(User).where(User.id == users[4]).values(role="technician"))
    reader = ConnectReader(pg_system.factory, readable, parallel=1)
    out = await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users),
                               return_exceptions=True)
    for i, result in enumerate(out):
        if i in (2, 4):
            assert isinstance(result, AuthError) and result.code == "token_invalid"
        else:
            assert not isinstance(result, BaseException), result
            assert result.name == f"name {i}"


async def test_a_batch_reads_its_users_in_one_statement(pg_system: System) -> None:
    users = make_users(pg_system, 20)
    reader = ConnectReader(pg_system.factory, readable, parallel=1)
    reader._plain = None  # the session's path (the plain one: its own test below)
    await reader.load(who(users[0]), auto(users[0]), [])  # streams created; idle again
    statements: list[str] = []
    engine = pg_system.factory.kw["bind"]

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        reader.parallel = 0  # nothing starts until all 19 wait: then one batch
        waiting = [asyncio.ensure_future(reader.load(who(u), auto(u), [])) for u in users[1:]]
        await asyncio.sleep(0)
        reader.parallel = 1
        reader._start()
        loaded = await asyncio.gather(*waiting)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert [got.name for got in loaded] == [f"name {i}" for i in range(1, 20)]
    user_reads = [s for s in statements if "FROM users" in s]
    assert len(user_reads) == 1, statements


async def test_a_batch_whose_streams_exist_reads_without_a_transaction(
        pg_system: System) -> None:
    users = make_users(pg_system, 6)
    reader = ConnectReader(pg_system.factory, readable, parallel=1)
    await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users))  # streams made
    reader._plain = None  # the session's path (the plain one: below)
    autocommit: list[bool] = []
    engine = pg_system.factory.kw["bind"]

    def seen(conn: Any, _cursor: object, _statement: str, *_: object) -> None:
        autocommit.append(bool(conn.connection.dbapi_connection.autocommit))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        loaded = await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert [got.name for got in loaded] == [f"name {i}" for i in range(6)]
    assert autocommit and all(autocommit)  # no BEGIN, no COMMIT


async def test_a_batch_reads_its_streams_heads_as_rows_and_a_restore_without_more_sql(
        pg_system: System) -> None:
    """The connects' own streams as Core rows (no ORM object per stream); a restored
    stream's row stays in the session for the restore check, read once."""
    users = make_users(pg_system, 4)
    reader = ConnectReader(pg_system.factory, readable_stream, parallel=1)
    await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users))  # streams made
    loads: list[str] = []
    stream_reads: list[str] = []
    engine = pg_system.factory.kw["bind"]

    def loaded(target: Stream, _context: object) -> None:
        loads.append(target.name)

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "FROM streams" in statement:
            stream_reads.append(statement)

    event.listen(Stream, "load", loaded)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        got = await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users))
        assert loads == []
        assert [g.auto[user_stream(u)].offset for g, u in zip(got, users, strict=True)] \
            == [0] * 4
        del stream_reads[:]
        restored = await reader.load(who(users[0]), auto(users[0]), [user_stream(users[0])])
    finally:
        event.remove(Stream, "load", loaded)
        event.remove(engine, "before_cursor_execute", seen)
    assert loads == [user_stream(users[0])]
    assert restored.restored[user_stream(users[0])] == restored.auto[user_stream(users[0])]
    assert len(stream_reads) == 2, stream_reads  # the Core read and the restored rows


async def test_a_batch_that_restores_nothing_reads_two_statements_without_a_session(
        pg_system: System) -> None:
    """Its user rows and heads from two array statements run by the driver's cursor on a
    plain connection (no ORM session, nothing through SQLAlchemy's execution), each
    connect's outcome what the session's path gives: refusals included."""
    users = make_users(pg_system, 6)
    reader = ConnectReader(pg_system.factory, readable, parallel=1)
    await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users))  # streams made
    with pg_system.factory() as session, session.begin():
        append(session, user_stream(users[1]), "notification", {"n": 1})
        session.execute(delete(User).where(User.id == users[2]))
        session.execute(update(User).where(User.id == users[4]).values(role="technician"))
    through_sqlalchemy: list[str] = []
    engine = pg_system.factory.kw["bind"]

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        through_sqlalchemy.append(statement)

    async def batch() -> list[Any]:
        reader.parallel = 0  # all six wait: then one batch
        waiting = [asyncio.ensure_future(reader.load(who(u), auto(u), [])) for u in users]
        await asyncio.sleep(0)
        reader.parallel = 1
        reader._start()
        out = await asyncio.gather(*waiting, return_exceptions=True)
        return [(type(o).__name__, o.code) if isinstance(o, AuthError) else o for o in out]

    plain, reader._plain = reader._plain, None
    by_session = await batch()
    assert plain is not None
    reader._plain, batches, statements = plain, reader.plain, plain.statements
    event.listen(engine, "before_cursor_execute", seen)
    try:
        by_plain = await batch()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert (reader.plain, plain.statements) == (batches + 1, statements + 2)
    assert through_sqlalchemy == []
    assert by_plain == by_session
    assert by_plain[1].auto[user_stream(users[1])].offset == 1
    assert [o for i, o in enumerate(by_plain) if i in (2, 4)] == [("AuthError",
                                                                   "token_invalid")] * 2


async def test_a_plain_read_the_driver_fails_is_read_again_through_the_session(
        pg_system: System) -> None:
    users = make_users(pg_system, 3)
    reader = ConnectReader(pg_system.factory, readable, parallel=1)
    await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users))  # streams made
    assert reader._plain is not None and reader._plain.sql is not None
    reader._plain.sql = ("SELECT no_such_column FROM streams", reader._plain.sql[1])
    batches = reader.plain
    loaded = await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users))
    assert [got.name for got in loaded] == [f"name {i}" for i in range(3)]
    assert reader.plain == batches  # every batch read by the session's path


def readable_stream(session: Session, _who: Principal, name: str) -> bool:
    """A restore check that needs the stream's row (as the gateway's `_readable` does)."""
    return session.get(Stream, name) is not None


async def test_nothing_is_cached_between_reads(pg_system: System) -> None:
    deleted, changed = make_users(pg_system, 2)
    reader = ConnectReader(pg_system.factory, readable)
    await reader.load(who(deleted), auto(deleted), [])
    await reader.load(who(changed), auto(changed), [])
    with pg_system.factory() as session, session.begin():
        session.execute(delete(User).where(User.id == deleted))
        session.execute(update(User).where(User.id == changed).values(role="admin"))
    for uid in (deleted, changed):
        with pytest.raises(AuthError) as refused:
            await reader.load(who(uid), auto(uid), [])
        assert refused.value.code == "token_invalid"


async def test_one_failing_request_does_not_fail_the_others(pg_system: System) -> None:
    users = make_users(pg_system, 8)
    poisoned = f"project-{users[3]}"

    def picky(session: Session, who: Principal, name: str) -> bool:
        if name == poisoned:
            raise RuntimeError("boom")
        return True

    reader = ConnectReader(pg_system.factory, picky, parallel=1)
    out = await asyncio.gather(
        *(reader.load(who(u), auto(u), [f"project-{u}"]) for u in users),
        return_exceptions=True)
    for uid, result in zip(users, out, strict=True):
        if uid == users[3]:
            assert isinstance(result, RuntimeError)
        else:
            assert not isinstance(result, BaseException), result
            assert list(result.restored) == [f"project-{uid}"]


async def test_missing_streams_are_created_once(pg_system: System) -> None:
    users = make_users(pg_system, 5)
    with pg_system.factory() as session, session.begin():
        session.execute(delete(Stream).where(Stream.name.in_(
            [user_stream(u) for u in users] + ["clients"])))
    reader = ConnectReader(pg_system.factory, readable, parallel=2)
    loaded = await asyncio.gather(*(reader.load(who(u), auto(u), []) for u in users))
    epochs = {got.auto["clients"].epoch for got in loaded}
    assert len(epochs) == 1  # one stream, whichever batch created it
    assert all(got.auto[user_stream(u)].offset == 0 for u, got in zip(users, loaded,
                                                                      strict=True))


# -- through the web node --------------------------------------------------------------

async def test_concurrent_socket_connects_each_get_their_own_connected(
        pg_system: System) -> None:
    users = make_users(pg_system, 25)
    with pg_system.factory() as session, session.begin():
        for i, uid in enumerate(users):
            for _ in range(i % 3):
                append(session, user_stream(uid), "notification", {"n": i})
    with pg_system.factory() as session:
        heads = {u: session.get(Stream, user_stream(u)) for u in users}
        expected = {u: (int(s.head), s.epoch) for u, s in heads.items() if s is not None}
    # Every other client restores its own stream from offset 0: it gets its missed events.
    clients = [SocketClient(pg_system.url, token(u, "client"),
                            positions={user_stream(u): {"offset": 0,
                                                        "epoch": expected[u][1]}}
                            if i % 2 else None)
               for i, u in enumerate(users)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        for i, (uid, client) in enumerate(zip(users, clients, strict=True)):
            payload = (await client.wait_count("connected", 1))[0].payload
            assert payload["userId"] == uid
            assert payload["role"] == "client"
            head, epoch = expected[uid]
            assert payload["positions"][user_stream(uid)] == {"offset": head, "epoch": epoch}
            assert set(payload["positions"]) == {user_stream(uid), "clients"}
            if i % 2:
                assert payload["recovered"] == {user_stream(uid): True}
                missed = await client.wait_count("notification", head)
                assert [e.meta["offset"] for e in missed] == list(range(1, head + 1))
            else:
                assert payload["recovered"] == {}
    finally:
        await asyncio.gather(*(c.close() for c in clients))


# -- what a closed socket leaves ----------------------------------------------------------

@dataclass
class LocalNode:
    url: str
    gateway: Gateway


@pytest.fixture
async def local_node(pg_system: System, redis_url: str) -> AsyncIterator[LocalNode]:
    """Herald's gateway in this process (to look at its objects), under a real uvicorn."""
    gateway = Gateway(session_factory=pg_system.factory, secret=os.environ["JWT_SECRET"],
                      redis_url=redis_url, channel=fresh_name("connects"))
    port = free_port()
    config = uvicorn.Config(socketio.ASGIApp(gateway.sio), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off",
                            ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually_async(lambda: server.started, "the node did not start")
    try:
        yield LocalNode(f"http://127.0.0.1:{port}", gateway)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await gateway.presence.redis.aclose()


async def test_a_closed_socket_is_collected(pg_system: System, local_node: LocalNode) -> None:
    gateway = local_node.gateway
    gateway.sio.eio.ping_interval, gateway.sio.eio.ping_timeout = 0.2, 0.5
    uid, other = make_users(pg_system, 2)
    client = SocketClient(local_node.url, token(uid, "client"))
    await client.connect()
    await client.wait_count("connected", 1)
    (eio_sid,) = list(gateway.sio.eio.sockets)
    # engine.io's service task keeps its loop variable (the last socket it looked at) while
    # no socket is left: a second socket stays open so that it moves on.
    keeper = SocketClient(local_node.url, token(other, "client"))
    await keeper.connect()
    await keeper.wait_count("connected", 1)
    sid = gateway.sio.manager.sid_from_eio_sid(eio_sid, "/")
    eio_socket = gateway.sio.eio.sockets[eio_sid]
    session = eio_socket.session
    assert session["/"]["who"].user_id == uid
    assert isinstance(eio_socket.queue, LeanQueue)
    proto = gateway.sio.environ[eio_sid]["asgi.receive"].__self__  # uvicorn's
    assert isinstance(proto.queue, LeanQueue)
    assert proto.request is None and proto.scope["headers"] == []
    del proto
    assert "wsgi.input" not in gateway.sio.environ[eio_sid]
    assert not [k for k in gateway.sio.environ[eio_sid] if k.startswith("HTTP_")]
    assert sid not in gateway.replayer._locks  # released after the connect's replay
    assert not gateway.sio._timers  # the CONNECT came: no timer left
    refs = [weakref.ref(eio_socket), weakref.ref(eio_socket.queue)]
    del eio_socket, session
    await client.close()
    await eventually_async(lambda: eio_sid not in gateway.sio.eio.sockets
                           and sid not in gateway.sio.manager.rooms.get("/", {}),
                           "the socket was not removed", 5)

    # engine.io's own tasks (a socket's ping, the service task's pass over a copy of the
    # sockets) hold a closed socket until they wake: short intervals here.
    def collected() -> bool:
        gc.collect()
        return all(r() is None for r in refs)

    await eventually_async(collected, lambda: f"still alive: {[r() for r in refs]}", 5,
                           interval=0.05)
    assert eio_sid not in gateway.sio.environ
    assert gateway.replayer._locks == {}
    assert gateway.manager.ordering.sids() == set()
    await keeper.close()


async def test_a_session_that_never_connects_is_closed(pg_system: System,
                                                        local_node: LocalNode) -> None:
    local_node.gateway.sio.connect_timeout = 0.3
    client = engineio.AsyncClient()
    closed = asyncio.Event()
    client.on("disconnect", lambda *_: closed.set())
    await client.connect(local_node.url, transports=["websocket"],
                         engineio_path="socket.io")  # engine.io only: never a CONNECT
    await asyncio.wait_for(closed.wait(), 10)
    assert local_node.gateway.sio._timers == {}
    assert local_node.gateway.sio.eio.sockets == {}
    await client.disconnect()


class _Recorder:
    """A transport that records what is written to it (anything else is the transport's)."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self.transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _frames(data: bytes) -> list[str]:
    """The text of each unmasked server frame in `data` (after any HTTP response head)."""
    if data.startswith(b"HTTP/"):
        data = data[data.index(b"\r\n\r\n") + 4:]
    texts = []
    while data:
        assert data[0] == 0x81, data[:2]  # FIN + TEXT
        size, at = data[1] & 0x7F, 2
        if size == 126:
            size, at = int.from_bytes(data[2:4], "big"), 4
        texts.append(data[at:at + size].decode())
        data = data[at + size:]
    return texts


@pytest.mark.parametrize("fewer", [True, False], ids=["connect_writes", "a_write_each"])
async def test_a_connect_is_written_in_two_writes_in_the_protocols_order(
        pg_system: System, local_node: LocalNode, monkeypatch: pytest.MonkeyPatch,
        fewer: bool) -> None:
    """The 101 response with engine.io's OPEN, then the CONNECT ack with `connected`: one
    write each (four before, and with the fast path off), the frames in the order the
    protocol has them."""
    monkeypatch.setattr(direct, "CONNECT_WRITES", fewer)
    writes: list[bytes] = []
    original = direct._SANSIO.connection_made  # type: ignore[union-attr]

    def connection_made(self: Any, transport: Any) -> None:
        original(self, _Recorder(transport, writes))

    monkeypatch.setattr(direct._SANSIO, "connection_made", connection_made)
    (uid,) = make_users(pg_system, 1)
    client = SocketClient(local_node.url, token(uid, "client"))
    try:
        await client.connect()
        payload = (await client.wait_count("connected", 1))[0].payload
        assert payload["userId"] == uid
        assert len(writes) == (2 if fewer else 4), writes
        if not fewer:  # a write each: the same bytes
            writes = [writes[0] + writes[1], writes[2] + writes[3]]
        assert writes[0].startswith(b"HTTP/1.1 101 ")
        (open_,) = _frames(writes[0])
        assert open_.startswith("0{") and '"sid"' in open_
        ack, connected = _frames(writes[1])
        assert ack.startswith("40{") and '"sid"' in ack
        assert connected.startswith('42["connected",')
    finally:
        await client.close()


# -- the pieces -------------------------------------------------------------------------

async def test_lean_queue_behaves_as_asyncio_queue() -> None:
    queue = LeanQueue()
    assert queue.empty() and queue.qsize() == 0
    for i in range(3000):  # past the compaction point, in order
        queue.put_nowait(i)
        if i % 3 == 0:
            assert queue.get_nowait() == i // 3
            queue.task_done()
    got = []
    while not queue.empty():
        got.append(await queue.get())
        queue.task_done()
    assert got == list(range(1000, 3000))
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    await queue.put("x")
    assert await waiter == "x"
    queue.task_done()
    await asyncio.wait_for(queue.join(), 1)
    bounded = LeanQueue(1)
    bounded.put_nowait(1)
    assert bounded.full()
    with pytest.raises(asyncio.QueueFull):
        bounded.put_nowait(2)


def test_session_ids_look_like_engine_io_ids() -> None:
    class Eio:
        sequence_number = 0xFFFFFE

    eio = Eio()
    ids = SessionIds(eio)
    made = [ids() for _ in range(3000)]  # crosses two reads of random bytes
    assert len(set(made)) == 3000
    assert all(len(i) == 20 and "/" not in i and "+" not in i for i in made)
    assert eio.sequence_number == (0xFFFFFE + 3000) & 0xFFFFFF

