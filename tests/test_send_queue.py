"""A socket that never reads costs the node a bounded amount (issue 15, row 3).

Each socket's send queue is bounded (app/gateway/sendqueue.py): live events past the bound
close its transport, and a replay is sent at the pace the socket drains, its transport
closed when it does not drain in time. The live events held for a socket while its replay
is paced are bounded the same way (app/gateway/ordering.py). A client that reads gets
everything.

Against Herald's gateway in this process (to read its queues) under a real uvicorn, with a
raw websocket client whose socket has a tiny receive buffer and that stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket as socketlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from app.gateway.bounds import SocketBounds
from app.gateway.ordering import Ordering
from app.gateway.sendqueue import SendQueue
from app.outbox.publisher import RedisPublisher
from app.outbox.replay import read_head
from app.outbox.streams import ticket_stream
from app.outbox.tables import EventRecord
from app.outbox.writer import append_rows
from app.portal import projects
from testkit.clients import SocketClient, token
from testkit.eventually import eventually_async
from testkit.localnode import LocalNode, local_node
from testkit.system import System

pytestmark = pytest.mark.anyio

QUEUE_BYTES = 256 * 1024
BOUNDS = SocketBounds(queue_bytes=QUEUE_BYTES, queue_packets=2000, drain_timeout=2.0)
HISTORY = 8000  # events of about 1 KB: 8 MB of history, 32 times the bound
FILLER = "x" * 1000
# A 64 KB send queue (about 60 events of FILLER: a longer history is paced) that is given
# 30 s to drain, longer than the tests that use it wait.
PACED = SocketBounds(queue_bytes=65536, queue_packets=2000, drain_timeout=30)


@dataclass
class Ticket:
    user: int
    id: int


def _ticket(system: System, events: int) -> Ticket:
    tag = uuid.uuid4().hex[:8]
    with system.factory() as session, session.begin():
        client = projects.create_user(session, email=f"sq-{tag}@test", role="client", name="c")
        project = projects.create_project(session, name="P", client_id=client.id,
                                          technician_ids=[])
        ticket = projects.create_ticket(session, project_id=project.id, subject="S",
                                        priority="normal")
        ids = (client.id, ticket.id)
    stream = ticket_stream(ids[1])
    for start in range(0, events, 1000):
        with system.factory() as session, session.begin():
            append_rows(session, [(stream, "note", {"i": i, "fill": FILLER})
                                  for i in range(start, min(events, start + 1000))])
    return Ticket(*ids)


@pytest.fixture
async def node(pg_system_session: System, redis_url: str) -> AsyncIterator[LocalNode]:
    async with local_node(pg_system_session, redis_url, bounds=BOUNDS) as n:
        yield n


async def _stuck_client(node: LocalNode, user: int, ticket: int, offset: int | None
                        ) -> ClientConnection:
    """A websocket that does the handshake, joins `ticket` and then reads nothing more
    (its socket's receive buffer is 4 KB); its close does not wait for the node's answer."""
    ws = await _raw_client(node, user, close_timeout=0.5)
    await _join(ws, ticket, offset)
    return ws


async def _raw_client(node: LocalNode, user: int, close_timeout: float = 10
                      ) -> ClientConnection:
    """A websocket through the handshake and the Socket.IO connect, reading nothing more
    until told (its socket's receive buffer is 4 KB). `close_timeout`: how long its close
    waits for the node's answer (which it does not see behind frames it left unread)."""
    raw = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_STREAM)
    raw.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", node.port))
    ws = await ws_connect(f"ws://127.0.0.1:{node.port}/socket.io/?EIO=4&transport=websocket",
                          sock=raw, max_queue=1, compression=None,
                          close_timeout=close_timeout)
    assert str(await ws.recv()).startswith("0{")
    await ws.send("40" + json.dumps({"token": token(user, "client")}))
    while not str(await ws.recv()).startswith("40"):
        pass
    return ws


async def _join(ws: ClientConnection, ticket: int, offset: int | None) -> None:
    join: dict[str, Any] = {"ticketId": ticket}
    if offset is not None:
        join["position"] = {"offset": offset}
    await ws.send("421" + json.dumps(["join-ticket", join]))


def _queued(sock: Any) -> int:
    """Characters of packet data on an engine.io socket's queue (read from its items)."""
    queue = sock.queue
    items = list(queue._queue)[getattr(queue, "_head", 0):]
    return sum(len(p.data) for p in items if p is not None and isinstance(p.data, str))


def _buffered(sock: Any) -> int:
    proto = getattr(getattr(getattr(sock, "_ws", None), "asgi_send", None), "__self__", None)
    transport = getattr(proto, "transport", None)
    return int(transport.get_write_buffer_size()) if transport is not None else 0


@dataclass
class Watch:
    queued: int = 0  # the most seen queued on the socket at once
    buffered: int = 0  # the most seen in its transport's write buffer
    closed: bool = False


async def _watch(node: LocalNode, eio_sid: str, seconds: float) -> Watch:
    """Sample one socket's queue and write buffer until it is closed (or `seconds`)."""
    watch = Watch()

    def sampled_until_closed() -> bool:
        sock = node.gateway.sio.eio.sockets.get(eio_sid)
        if sock is None or sock.closed:
            watch.closed = True
            return True
        watch.queued = max(watch.queued, _queued(sock))
        watch.buffered = max(watch.buffered, _buffered(sock))
        return False

    await eventually_async(sampled_until_closed, lambda: f"never closed: {watch}", seconds,
                           interval=0.005)
    return watch


async def _new_socket(node: LocalNode, before: set[str]) -> str:
    new: set[str] = await eventually_async(
        lambda: set(node.gateway.sio.eio.sockets) - before, "no new engine.io socket", 5,
        interval=0.01)
    return new.pop()


async def test_a_replay_to_a_socket_that_never_reads_is_paced_then_closed(
    pg_system_session: System, node: LocalNode, caplog: pytest.LogCaptureFixture
) -> None:
    ticket = _ticket(pg_system_session, HISTORY)
    before = set(node.gateway.sio.eio.sockets)
    caplog.set_level(logging.INFO, logger="herald.gateway")
    stuck = await _stuck_client(node, ticket.user, ticket.id, offset=0)
    eio_sid = await _new_socket(node, before)
    watch = await _watch(node, eio_sid, 30)
    await stuck.close()
    assert watch.closed
    assert watch.queued <= QUEUE_BYTES, watch
    assert watch.buffered <= 2 * QUEUE_BYTES, watch
    # Nothing was pruned: its join ends `unavailable` (reconnect and recover), never
    # `gone` (which tells a client to drop its state), in one line saying why.
    ended = await eventually_async(
        lambda: [r.getMessage() for r in caplog.records
                 if "join ended" in r.getMessage()],
        "the join never ended", 10, interval=0.05)
    assert [line.endswith(" reason=closed-for-not-reading") for line in ended] == [True], ended
    assert not [r.getMessage() for r in caplog.records if "socket call refused" in r.getMessage()]
    assert not [r.getMessage() for r in caplog.records if "Gone" in r.getMessage()]
    # A client that reads gets the whole history.
    reader = SocketClient(node.url, token(ticket.user, "client"))
    await reader.connect()
    try:
        joined = await reader.call("join-ticket",
                                   {"ticketId": ticket.id, "position": {"offset": 0}}, 60)
        assert joined["ok"] and joined["recovered"], joined
        notes = await reader.wait_count("note", HISTORY, timeout=60)
        assert [n.payload["i"] for n in notes] == list(range(HISTORY))
    finally:
        await reader.close()


async def test_live_events_to_a_socket_that_never_reads_close_its_transport(
    pg_system_session: System, node: LocalNode
) -> None:
    ticket = _ticket(pg_system_session, 0)
    room = ticket_stream(ticket.id)
    reader = SocketClient(node.url, token(ticket.user, "client"))
    await reader.connect()
    assert (await reader.call("join-ticket", ticket.id))["ok"]
    before = set(node.gateway.sio.eio.sockets)
    stuck = await _stuck_client(node, ticket.user, ticket.id, offset=None)
    eio_sid = await _new_socket(node, before)
    def in_room() -> bool:
        sid = node.gateway.sio.manager.sid_from_eio_sid(eio_sid, "/")
        return sid is not None and room in node.gateway.sio.rooms(sid)

    await eventually_async(in_room, "the stuck socket never entered the room", 5,
                           interval=0.01)
    watcher = asyncio.create_task(_watch(node, eio_sid, 30))
    count = 2000  # of 4 KB: 8 MB, 32 times the bound (the kernel's buffers take some MB)
    for i in range(count):
        await node.gateway.sio.emit("live", {"i": i, "fill": FILLER * 4}, room=room)
    watch = await watcher
    await stuck.close()
    try:
        assert watch.closed
        assert watch.queued <= QUEUE_BYTES + 5000, watch
        live = await reader.wait_count("live", count, timeout=30)
        assert [e.payload["i"] for e in live] == list(range(count))
    finally:
        await reader.close()


def _append(system: System, stream: str, start: int, count: int) -> list[EventRecord]:
    with system.factory() as session, session.begin():
        return append_rows(session, [(stream, "note", {"i": i, "fill": FILLER})
                                     for i in range(start, start + count)])


async def _publish(system: System, publisher: RedisPublisher, stream: str, start: int,
                   count: int) -> None:
    """`count` events appended to `stream` (`_append`) and published live to the node."""
    events = await asyncio.to_thread(_append, system, stream, start, count)
    await asyncio.to_thread(publisher.publish, events)


async def _until_paced(ordering: Ordering, sid: str, stream: str, queue: Any,
                       what: str = "the replay was not paced") -> None:
    """Until the socket's replay of `stream` is gated and its send queue has no room for
    two more events: the node waits for the client to read."""
    await eventually_async(lambda: ordering.is_gated(sid, stream)
                           and not queue.has_room(2 * len(FILLER)), what)


def _join_from_the_start(node: LocalNode, sid: str, ticket: int) -> asyncio.Task[Any]:
    """`sid` joins `ticket` from offset 0, as the node's handler answers it (the ack comes
    back to the test, not to the client)."""
    join = node.gateway.sio.handlers["/"]["join-ticket"]
    return asyncio.create_task(join(sid, {"ticketId": ticket, "position": {"offset": 0}}))


async def _read_offsets(ws: ClientConnection, stream: str, count: int) -> list[int]:
    """Read (answering pings) until `count` events of `stream` came; their offsets."""
    got, closed = await _read_slowly(ws, stream, count, 0, timeout=60)
    assert not closed, f"closed after {len(got)} of {count} events"
    return got


async def _read_slowly(ws: ClientConnection, stream: str, count: int, pause: float,
                       timeout: float = 30) -> tuple[list[int], bool]:
    """Read one frame each `pause` seconds (answering pings) until `count` events of
    `stream` came or the node closed the connection: (their offsets, whether closed)."""
    got: list[int] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < count:
                frame = str(await ws.recv())
                if frame == "2":
                    await ws.send("3")
                elif frame.startswith("42"):
                    args = json.loads(frame[2:])[1:]
                    if len(args) == 2 and isinstance(args[1], dict) \
                            and args[1].get("stream") == stream:
                        got.append(args[1]["offset"])
                await asyncio.sleep(pause)
    except ConnectionClosed:
        return got, True
    return got, False


@contextlib.asynccontextmanager
async def _narrow_client(node: LocalNode, user: int, redis_url: str
                         ) -> AsyncIterator[tuple[ClientConnection, Any, str, RedisPublisher]]:
    """A raw client (`_raw_client`) whose socket's send buffers on the node are 4 KB
    (`_small_send_buffers`), with its engine.io socket, its Socket.IO sid and a publisher
    to the node's channel; closed after."""
    gateway = node.gateway
    sockets = gateway.sio.eio.sockets
    before = set(sockets)
    client = await _raw_client(node, user, close_timeout=0.5)
    publisher = RedisPublisher(redis_url, channel=gateway.manager.channel)
    try:
        eio_sid = await _new_socket(node, before)
        sock = sockets[eio_sid]
        _small_send_buffers(sock)
        yield client, sock, gateway.sio.manager.sid_from_eio_sid(eio_sid, "/"), publisher
    finally:
        publisher.close()
        await client.close()


def _small_send_buffers(sock: Any) -> None:
    """Shrink what the node's kernel socket and uvicorn's transport buffer for one socket
    (4 KB each), so that a client reading slowly backs up into its send queue after a few
    dozen KB rather than some MB."""
    transport = sock._ws.asgi_send.__self__.transport
    transport.get_extra_info("socket").setsockopt(socketlib.SOL_SOCKET,
                                                  socketlib.SO_SNDBUF, 4096)
    transport.set_write_buffer_limits(high=4096)


@dataclass
class Held:
    chars: int = 0  # the most seen held for the socket at once
    events: int = 0


async def _watch_held(ordering: Ordering, sid: str, held: Held) -> None:
    while True:  # until cancelled
        chars, events = ordering.held(sid)
        held.chars, held.events = max(held.chars, chars), max(held.events, events)
        await asyncio.sleep(0.005)


async def test_live_events_held_during_a_paced_replay_stay_bounded_and_all_arrive_in_order(
    pg_system_session: System, redis_url: str
) -> None:
    """A client stops reading mid-replay while 1.5 MB of live events of the stream come:
    what its gate holds stays within the bound (it drops them past it), and once the client
    reads it gets the history and every live event, in order, once. (Here the replay's
    later reads of the table cover what the gate dropped; the next test, the flush's.)"""
    ticket = _ticket(pg_system_session, HISTORY)
    stream = ticket_stream(ticket.id)
    live = 1500  # events of about 1 KB during the replay: 6 times what its gates may hold
    bounds = SocketBounds(queue_bytes=QUEUE_BYTES, queue_packets=2000, drain_timeout=30)
    async with local_node(pg_system_session, redis_url, bounds=bounds) as node:
        ordering = node.gateway.manager.ordering
        sockets = node.gateway.sio.eio.sockets
        before = set(sockets)
        stuck = await _stuck_client(node, ticket.user, ticket.id, offset=0)
        held = Held()
        watcher: asyncio.Task[None] | None = None
        publisher = RedisPublisher(redis_url, channel=node.gateway.manager.channel)
        try:
            eio_sid = await _new_socket(node, before)
            sid = await eventually_async(
                lambda: node.gateway.sio.manager.sid_from_eio_sid(eio_sid, "/"), "no sid")
            # The replay waits for the socket to read: its gate is open, its queue full.
            await _until_paced(ordering, sid, stream, sockets[eio_sid].queue,
                               "replay not paced")
            watcher = asyncio.create_task(_watch_held(ordering, sid, held))
            for start in range(0, live, 100):
                await _publish(pg_system_session, publisher, stream, HISTORY + start, 100)
            await eventually_async(lambda: ordering.overflows > 0, "the gates never overflowed")
            got = await _read_offsets(stuck, stream, HISTORY + live)
        finally:
            if watcher is not None:
                watcher.cancel()
            publisher.close()
            await stuck.close()
        assert got == list(range(1, HISTORY + live + 1))
        assert 0 < held.chars <= QUEUE_BYTES and held.events <= 2000, held
        assert not ordering.is_gated(sid, stream)


async def test_live_events_a_full_gate_dropped_are_read_from_the_table_in_order(
    pg_system_session: System, redis_url: str
) -> None:
    """The gate of a replay still sending (after its last read of the table) goes over its
    bound: what it dropped is read from the table by the replay's flush, then the rest."""
    ticket = _ticket(pg_system_session, 10)
    stream = ticket_stream(ticket.id)
    live = 400  # events of about 1 KB: 6 times what the gates may hold
    async with local_node(pg_system_session, redis_url, bounds=PACED) as node:
        ordering = node.gateway.manager.ordering
        reader = SocketClient(node.url, token(ticket.user, "client"))
        await reader.connect()
        publisher = RedisPublisher(redis_url, channel=node.gateway.manager.channel)
        try:
            joined = await reader.call("join-ticket", ticket.id)
            assert joined["ok"] and joined["offset"] == 10, joined
            sid = reader.sio.get_sid("/")
            node.gateway.manager.open_gate(sid, stream)  # as a replay still sending would
            for start in range(0, live, 100):
                await _publish(pg_system_session, publisher, stream, 10 + start, 100)
                assert ordering.held(sid)[0] <= 65536
            await eventually_async(lambda: ordering.overflows > 0, "the gate never overflowed")
            await node.gateway.replayer.flush(sid, stream, 10, joined["epoch"])
            notes = await reader.wait_count("note", live, timeout=30)
            assert [n.meta["offset"] for n in notes if n.meta] == list(range(11, 11 + live))
            assert not ordering.is_gated(sid, stream)
        finally:
            publisher.close()
            await reader.close()


async def test_live_events_a_gate_held_during_a_paced_replay_are_flushed_as_the_socket_reads(
    pg_system_session: System, redis_url: str
) -> None:
    """A client reads nothing while the node paces its replay (its send queue up to half
    full), and its gate meanwhile holds as many live events of the stream as the queue's
    bound (the gate's own: it does not go over); then the client reads, slowly but
    steadily. The replay's flush sends the held events at the pace it reads: it gets the
    history and every live event once, in order, and its transport is not closed. (Put on
    the queue at once on top of what the history left there, they went over its bound:
    the transport of a socket that reads was closed after the history.)"""
    history = 200  # events of about 1 KB: some times what the node buffers once shrunk
    bound = 40  # packets on the send queue, and events the gates may hold
    ticket = _ticket(pg_system_session, history)
    stream = ticket_stream(ticket.id)
    # 64 KB: the history's page is too long for one direct write, and the gate's events
    # fit (the packets are the bound that counts: the queue is paced at 20 of them).
    bounds = SocketBounds(queue_bytes=65536, queue_packets=bound, drain_timeout=10)
    async with local_node(pg_system_session, redis_url, bounds=bounds) as node:
        gateway = node.gateway
        ordering = gateway.manager.ordering
        async with _narrow_client(node, ticket.user, redis_url) as (client, sock, sid,
                                                                     publisher):
            await _join(client, ticket.id, 0)
            await _until_paced(ordering, sid, stream, sock.queue)
            await _publish(pg_system_session, publisher, stream, history, bound)
            await eventually_async(lambda: ordering.held(sid)[1] == bound,
                                   lambda: f"the gate holds {ordering.held(sid)}")
            got, closed = await _read_slowly(client, stream, history + bound, 0.001)
        assert not closed, f"closed after {len(got)} of {history + bound} events"
        assert got == list(range(1, history + bound + 1))
        assert gateway.sio.overflows == 0
        assert ordering.overflows == 0 and not ordering.is_gated(sid, stream)


async def test_a_flush_to_a_socket_that_stopped_reading_closes_it_after_the_drain_timeout(
    pg_system_session: System, redis_url: str
) -> None:
    """A replay's flush of the live events its gate held waits for room on the send queue
    as the history does: a client that reads nothing (its transport's writer blocked by
    what came before) has its transport closed after the drain timeout, and the flush
    stops there (what was not sent is left to the client's replay on reconnect), its gate
    closed."""
    bound = 40  # packets on the send queue, and events the gates may hold
    ticket = _ticket(pg_system_session, 0)
    stream = ticket_stream(ticket.id)
    bounds = SocketBounds(queue_bytes=65536, queue_packets=bound, drain_timeout=1)
    async with local_node(pg_system_session, redis_url, bounds=bounds) as node:
        gateway = node.gateway
        ordering = gateway.manager.ordering
        async with _narrow_client(node, ticket.user, redis_url) as (stuck, sock, sid,
                                                                     publisher):
            await _join(stuck, ticket.id, None)
            await eventually_async(lambda: stream in gateway.sio.rooms(sid)
                                   and not ordering.is_gated(sid, stream), "not joined")
            gateway.manager.open_gate(sid, stream)  # as a replay still sending would
            await _publish(pg_system_session, publisher, stream, 0, bound)
            await eventually_async(lambda: ordering.held(sid)[1] == bound,
                                   lambda: f"the gate holds {ordering.held(sid)}")
            with pg_system_session.factory() as session, session.begin():
                epoch = read_head(session, stream).epoch
            async with asyncio.timeout(10):
                while sock.queue.qsize() < 5:  # until the writer is blocked: packets stay
                    await gateway.sio.emit("filler", {"fill": FILLER}, to=sid)
                    await asyncio.sleep(0.01)
            last = await asyncio.wait_for(gateway.replayer.flush(sid, stream, 0, epoch), 10)
            assert 0 < last < bound, last
            assert sock.closed or sock.closing
            assert gateway.sio.overflows == 1 and not ordering.is_gated(sid, stream)


async def test_a_join_whose_flush_stops_for_a_socket_that_stopped_reading_ends_unavailable(
    pg_system_session: System, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client reads its join's history, then stops reading, while far more live events
    than its send queue and the buffers behind it take were published during that history
    (its gate went over its bound: the flush reads them from the table). The flush stops
    when the node closes the transport for not reading: the join is answered `unavailable`
    (the client reconnects and recovers; nobody gets this ack), with one line saying why,
    and is never logged `joined`."""
    history = 200  # events of about 1 KB: over the queue's bound, so paced
    live = 400  # about 400 KB published while the history waits: 6 times the gate's bound
    ticket = _ticket(pg_system_session, history)
    stream = ticket_stream(ticket.id)
    caplog.set_level(logging.INFO, logger="herald.gateway")
    async with local_node(pg_system_session, redis_url, bounds=PACED) as node:
        gateway = node.gateway
        ordering = gateway.manager.ordering
        reader = SocketClient(node.url, token(ticket.user, "client"))
        await reader.connect()
        try:
            assert (await reader.call("join-ticket", ticket.id))["ok"]
            async with _narrow_client(node, ticket.user, redis_url) as (client, sock, sid,
                                                                         publisher):
                joining = _join_from_the_start(node, sid, ticket.id)  # its ack reaches nobody
                await _until_paced(ordering, sid, stream, sock.queue)
                for start in range(history, history + live, 100):
                    await _publish(pg_system_session, publisher, stream, start, 100)
                await reader.wait_count("note", live, timeout=30)  # the node has them all
                assert ordering.overflows > 0
                gateway.replayer.drain_timeout = 2  # from now on: closed after 2 s unread
                got, closed = await _read_slowly(client, stream, history, 0)
                assert got == list(range(1, history + 1)) and not closed
                ack = await asyncio.wait_for(joining, 30)
                assert sock.closed or sock.closing
        finally:
            await reader.close()
    assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if f"sid={sid} " in line and "join" in line] == [
        f"join ended sid={sid} stream={stream} reason=closed-for-not-reading"], lines
    assert not ordering.is_gated(sid, stream)


# -- the queue alone ----------------------------------------------------------------------

class _Pkt:
    def __init__(self, data: str | None) -> None:
        self.data = data


async def test_a_queue_past_its_bound_drops_everything_and_calls_back_once() -> None:
    calls: list[int] = []
    queue = SendQueue(max_bytes=1000, max_packets=10)
    queue.on_overflow = lambda: calls.append(1)
    for _ in range(3):
        queue.put_nowait(_Pkt("x" * 300))
    assert queue.bytes == 900 and calls == []
    queue.put_nowait(_Pkt("x" * 300))
    assert calls == [1] and queue.overflowed and queue.empty() and queue.bytes == 0
    queue.put_nowait(_Pkt("y"))  # dropped: the transport is being closed
    queue.put_nowait(None)  # the writer's end is always queued
    assert queue.qsize() == 1 and queue.get_nowait() is None and calls == [1]
    counted = SendQueue(max_bytes=10**6, max_packets=10)
    for _ in range(11):
        counted.put_nowait(_Pkt(None))  # pings: no data, but packets count
    assert counted.overflowed


async def test_waiting_for_room_ends_when_the_writer_takes_or_after_the_timeout() -> None:
    queue = SendQueue(max_bytes=1000, max_packets=100)
    for _ in range(8):
        queue.put_nowait(_Pkt("x" * 100))
    assert not queue.has_room(100)
    assert await queue.wait_room(100, timeout=0.05) is False
    waiter = asyncio.create_task(queue.wait_room(100, timeout=10))
    for _ in range(4):
        queue.get_nowait()
        queue.task_done()
    assert await waiter is True and queue.bytes == 400


async def test_waiting_for_room_ends_at_once_when_the_socket_went() -> None:
    queue = SendQueue(max_bytes=1000, max_packets=100)
    for _ in range(8):
        queue.put_nowait(_Pkt("x" * 100))
    waiter = asyncio.create_task(queue.wait_room(100, timeout=60))
    await asyncio.sleep(0)
    queue.end()
    assert await asyncio.wait_for(waiter, 5) is False
    assert await queue.wait_room(100, timeout=60) is False  # and answers so from then on


async def test_a_catch_up_is_paced_to_a_slow_reader_that_gets_every_event_once_in_order(
    pg_system_session: System, redis_url: str
) -> None:
    """After a lost subscription the node catches its rooms up from the event table
    (app/gateway/catchup.py): 8 MB of history a socket missed, 32 times its send queue's
    bound, goes at the pace it reads, as a replay's does, while its gate holds the live
    events published meanwhile. The socket is not closed, and once it reads it gets every
    event once, in order."""
    ticket = _ticket(pg_system_session, 0)
    stream = ticket_stream(ticket.id)
    live = 200  # events of about 1 KB published while the catch-up waits for the reader
    bounds = SocketBounds(queue_bytes=QUEUE_BYTES, queue_packets=2000, drain_timeout=30)
    async with local_node(pg_system_session, redis_url, bounds=bounds) as node:
        gateway = node.gateway
        ordering = gateway.manager.ordering
        sockets = gateway.sio.eio.sockets
        before = set(sockets)
        stuck = await _stuck_client(node, ticket.user, ticket.id, offset=None)
        publisher = RedisPublisher(redis_url, channel=gateway.manager.channel)
        catching: asyncio.Task[None] | None = None
        try:
            eio_sid = await _new_socket(node, before)
            sid = await eventually_async(
                lambda: gateway.sio.manager.sid_from_eio_sid(eio_sid, "/"), "no sid")
            await eventually_async(
                lambda: stream in gateway.sio.rooms(sid) and ordering.mark(stream) == 0
                and not ordering.is_gated(sid, stream), "the join never ended")
            # The gap: events committed while the node was not subscribed, never published.
            for start in range(0, HISTORY, 1000):
                await asyncio.to_thread(_append, pg_system_session, stream, start, 1000)
            catching = asyncio.create_task(gateway.catchup.all_rooms())

            def paced() -> bool:
                sock = sockets.get(eio_sid)
                assert sock is not None and not sock.closed, "the catch-up closed the socket"
                return ordering.is_gated(sid, stream) and not sock.queue.has_room(
                    2 * len(FILLER))

            await eventually_async(paced, "the catch-up was not paced")
            for start in range(HISTORY, HISTORY + live, 100):
                await _publish(pg_system_session, publisher, stream, start, 100)
            got = await _read_offsets(stuck, stream, HISTORY + live)
            await asyncio.wait_for(catching, 30)
        finally:
            if catching is not None and not catching.done():
                catching.cancel()
            publisher.close()
            await stuck.close()
        assert got == list(range(1, HISTORY + live + 1))
        assert not ordering.is_gated(sid, stream)


async def test_a_catch_up_closes_only_the_socket_that_never_reads_and_the_others_get_everything(
    pg_system_session: System, node: LocalNode
) -> None:
    """The stuck socket's transport is closed after the drain timeout (it would recover by
    replay on reconnect); the reader in the same room is not closed, gets every missed
    event once in order, and the room's mark reaches the head."""
    ticket = _ticket(pg_system_session, 0)
    stream = ticket_stream(ticket.id)
    gateway = node.gateway
    ordering = gateway.manager.ordering
    sockets = gateway.sio.eio.sockets
    before = set(sockets)
    stuck = await _stuck_client(node, ticket.user, ticket.id, offset=None)
    reader = SocketClient(node.url, token(ticket.user, "client"))
    try:
        eio_sid = await _new_socket(node, before)
        await reader.connect()
        joined = await reader.call("join-ticket", {"ticketId": ticket.id})
        assert joined["ok"], joined
        await eventually_async(lambda: ordering.mark(stream) == 0, "the joins never ended")
        for start in range(0, HISTORY, 1000):  # missed: committed, never published
            await asyncio.to_thread(_append, pg_system_session, stream, start, 1000)
        await asyncio.wait_for(gateway.catchup.all_rooms(), 60)
        sock = sockets.get(eio_sid)
        assert sock is None or sock.closed, "the socket that never reads was not closed"
        notes = await reader.wait_count("note", HISTORY, timeout=60)
        assert [n.payload["i"] for n in notes] == list(range(HISTORY))
        assert reader.sio.connected
        assert ordering.mark(stream) == HISTORY
    finally:
        await reader.close()
        await stuck.close()


async def test_a_join_whose_client_hangs_up_during_its_history_ends_saying_it_disconnected(
    pg_system_session: System, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that hangs up while its join's history is paced (its send queue full) ends
    the join at once, not after the drain timeout (30 s here), as the node closing it for
    not reading does (`unavailable`, never `joined`); its line says that the client went,
    and the node neither says nor counts that it closed the socket for not draining."""
    history = 200  # events of about 1 KB: over the queue's bound, so paced
    ticket = _ticket(pg_system_session, history)
    stream = ticket_stream(ticket.id)
    caplog.set_level(logging.INFO, logger="herald.gateway")
    async with local_node(pg_system_session, redis_url, bounds=PACED) as node:
        async with _narrow_client(node, ticket.user, redis_url) as (client, sock, sid, _pub):
            joining = _join_from_the_start(node, sid, ticket.id)
            await _until_paced(node.gateway.manager.ordering, sid, stream, sock.queue)
            await client.close()
            ack = await asyncio.wait_for(joining, 10)  # well before the drain timeout
        sio = node.gateway.sio
        assert not sio.closed_for_not_reading(sid) and sio.overflows == 0
    assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if f"sid={sid}" in line and "join" in line] == [
        f"join ended sid={sid} stream={stream} reason=disconnected"], lines
    assert not [line for line in lines if "did not drain" in line], lines
