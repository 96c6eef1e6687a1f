"""A socket that never reads costs the node a bounded amount (issue 15, row 3).

Each socket's send queue is bounded (app/gateway/sendqueue.py): live events past the bound
close its transport, and a replay is sent at the pace the socket drains, its transport
closed when it does not drain in time. A client that reads gets everything.

Against Herald's gateway in this process (to read its queues) under a real uvicorn, with a
raw websocket client whose socket has a tiny receive buffer and that stops reading.
"""

from __future__ import annotations

import asyncio
import json
import socket as socketlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from app.gateway.bounds import SocketBounds
from app.gateway.sendqueue import SendQueue
from app.outbox.streams import ticket_stream
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
    (its socket's receive buffer is 4 KB)."""
    raw = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_STREAM)
    raw.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", node.port))
    ws = await ws_connect(f"ws://127.0.0.1:{node.port}/socket.io/?EIO=4&transport=websocket",
                          sock=raw, max_queue=1, compression=None)
    assert str(await ws.recv()).startswith("0{")
    await ws.send("40" + json.dumps({"token": token(user, "client")}))
    while not str(await ws.recv()).startswith("40"):
        pass
    join: dict[str, Any] = {"ticketId": ticket}
    if offset is not None:
        join["position"] = {"offset": offset}
    await ws.send("421" + json.dumps(["join-ticket", join]))
    return ws


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
    pg_system_session: System, node: LocalNode
) -> None:
    ticket = _ticket(pg_system_session, HISTORY)
    before = set(node.gateway.sio.eio.sockets)
    stuck = await _stuck_client(node, ticket.user, ticket.id, offset=0)
    eio_sid = await _new_socket(node, before)
    watch = await _watch(node, eio_sid, 30)
    await stuck.close()
    assert watch.closed
    assert watch.queued <= QUEUE_BYTES, watch
    assert watch.buffered <= 2 * QUEUE_BYTES, watch
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
