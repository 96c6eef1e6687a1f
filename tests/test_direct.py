"""Direct frame writes to idle websockets (app/gateway/direct.py): same bytes, same order.

Real uvicorn, real python-socketio clients (tests/test_fanout.py's node); the fast path's
direct writes are counted, so that a test proves it ran, and each test mixes them with
what must go through engine.io's queue (python-socketio's own emits, pings, a transport
paused by flow control, a socket being closed, a polling client that upgrades).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import engineio
import pytest
from socketio.packet import EVENT
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from app.gateway import direct
from testkit.eventually import eventually_async
from tests.test_fanout import Client, Node, close_all, connected, durable, node

pytestmark = pytest.mark.anyio
__all__ = ["node"]  # the fixture, imported


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts the frames written directly (and the refusals)."""
    counts = {"direct": 0, "queued": 0}
    original = direct.DirectSocket.write_frame

    def write_frame(self: direct.DirectSocket, frame: bytes) -> bool:
        done = original(self, frame)
        counts["direct" if done else "queued"] += 1
        return done

    monkeypatch.setattr(direct.DirectSocket, "write_frame", write_frame)
    yield counts


def _server_socket(node: Node, sid: str) -> Any:
    return node.sio.eio.sockets[node.manager.eio_sid_from_sid(sid, "/")]


async def _idle(socket: Any, timeout: float = 5) -> None:
    await eventually_async(lambda: socket.idle is not None and socket.queue.empty(),
                           "writer never idle", timeout, interval=0.005)


def test_text_frame_is_what_websockets_writes_for_send_text() -> None:
    for text in ("42[\"e\",{}]", "é ✓" * 40, "x" * 125, "x" * 126, "y" * 70_000):
        conn = ServerProtocol()
        conn.state = conn.state.OPEN
        conn.send_text(text.encode())
        assert direct.text_frame(text) == b"".join(conn.data_to_send())
        assert direct.text_frame(text) == Frame(Opcode.TEXT, text.encode()).serialize(
            mask=False)


async def test_websocket_sockets_are_direct_and_idle_ones_get_frames_written(
        node: Node, counted: dict[str, int]) -> None:
    clients = await connected(node, 5)
    try:
        for sid in node.sids:
            socket = _server_socket(node, sid)
            assert isinstance(socket, direct.DirectSocket)
            await _idle(socket)
        await node.emit("notification", durable(1))
        assert counted["direct"] == 5
        for offset in range(2, 101):
            await node.emit("notification", durable(offset))
        for client in clients:
            await client.wait_for(100)
            assert client.offsets() == list(range(1, 101))
            assert client.got[0] == ("notification", tuple(durable(1)))
    finally:
        await close_all(clients)


async def test_direct_writes_keep_order_with_queued_packets(
        node: Node, counted: dict[str, int]) -> None:
    """Packets put on engine.io's queue (as python-socketio and the replay send) between
    fast-path events: one order, and the fast path queues behind them."""
    (client,) = await connected(node, 1)
    sid = node.sids[0]
    eio_sid = node.manager.eio_sid_from_sid(sid, "/")
    socket = _server_socket(node, sid)
    try:
        await _idle(socket)
        fast = 0
        for offset in range(1, 201):
            if offset % 3 == 0:  # engine.io's queue, no await in between
                pkt = node.sio.packet_class(EVENT, namespace="/",
                                            data=["notification", *durable(offset)])
                await node.sio.eio.send(eio_sid, pkt.encode())
            else:
                await node.emit("notification", durable(offset))
                fast += 1
            if offset % 20 == 0:
                await asyncio.sleep(0.01)  # the writer drains and goes idle again
        await client.wait_for(200)
        assert client.offsets() == list(range(1, 201))
        assert 1 <= counted["direct"] < fast  # some written at once, some behind the queue
    finally:
        await close_all([client])


async def test_a_paused_transport_queues_and_order_holds_after_it_resumes(
        node: Node, counted: dict[str, int]) -> None:
    (client,) = await connected(node, 1)
    socket = _server_socket(node, node.sids[0])
    try:
        await _idle(socket)
        proto = socket.idle
        proto.writable.clear()  # as uvicorn's pause_writing does
        for offset in range(1, 51):
            await node.emit("notification", durable(offset))
            await asyncio.sleep(0)
        assert counted["direct"] == 0
        await asyncio.sleep(0.1)
        assert client.got == []
        proto.writable.set()  # resume_writing
        for offset in range(51, 101):
            await node.emit("notification", durable(offset))
            await asyncio.sleep(0)
        await client.wait_for(100)
        assert client.offsets() == list(range(1, 101))
    finally:
        await close_all([client])


async def test_a_packet_in_the_writers_hands_goes_out_before_a_later_one(
        node: Node, counted: dict[str, int]) -> None:
    """The writer took event 1 and waits on a paused transport; the transport resumes and
    event 2 comes before the writer runs again: 2 must not overtake 1."""
    (client,) = await connected(node, 1)
    socket = _server_socket(node, node.sids[0])
    try:
        for _ in range(3):
            await _idle(socket)
            proto = socket.idle
            got = len(client.got)
            proto.writable.clear()
            await node.emit("notification", durable(got + 1))
            for _ in range(5):
                await asyncio.sleep(0)  # the writer takes it and blocks in uvicorn's send
            assert socket.queue.empty() and socket.idle is None
            proto.writable.set()
            await node.emit("notification", durable(got + 2))  # before the writer resumes
            await client.wait_for(got + 2)
        assert client.offsets() == list(range(1, 7))
    finally:
        await close_all([client])


async def test_no_direct_write_to_a_closing_socket_or_past_a_close(
        node: Node, counted: dict[str, int]) -> None:
    clients = await connected(node, 2)
    closing = _server_socket(node, node.sids[1])
    try:
        await _idle(closing)
        await closing.queue.put(None)  # what closing a transport does first (sio.py)
        assert closing.write_frame(direct.text_frame("42[\"x\"]")) is False
        await node.emit("notification", durable(1))
        await node.emit("notification", durable(2))  # a sentinel for the open socket
        await clients[0].wait_until(lambda: 2 in clients[0].offsets())
        # the closing one's close frame comes behind anything written to it before
        await eventually_async(lambda: not clients[1].sio.connected, "the socket stayed open")
        assert clients[0].offsets() == [1, 2]
        assert clients[1].got == []
    finally:
        await close_all(clients)


async def test_pings_and_events_interleave_and_the_socket_stays_up(
        node: Node, counted: dict[str, int]) -> None:
    node.sio.eio.ping_interval = 0.05  # pings on the queue between direct writes
    (client,) = await connected(node, 1)
    try:
        for offset in range(1, 101):
            await node.emit("notification", durable(offset))
            await asyncio.sleep(0.003)
        await client.wait_for(100)
        assert client.offsets() == list(range(1, 101))
        assert client.sio.connected
        assert counted["direct"] >= 1
    finally:
        await close_all([client])


async def test_a_polling_client_that_upgrades_gets_everything_in_order(
        node: Node, counted: dict[str, int]) -> None:
    client = Client()
    await client.sio.connect(node.url, transports=["polling", "websocket"], wait_timeout=10)
    try:
        await eventually_async(lambda: node.sids, "the client did not connect")
        socket = _server_socket(node, node.sids[0])
        for offset in range(1, 151):
            await node.emit("notification", durable(offset))
            await asyncio.sleep(0.002)  # the upgrade happens meanwhile
        await _idle(socket, timeout=20)  # upgraded, its websocket writer waiting
        assert socket.upgraded
        for offset in range(151, 301):
            await node.emit("notification", durable(offset))
            await asyncio.sleep(0.002)
        await client.wait_for(300)
        assert client.offsets() == list(range(1, 301))
        assert counted["direct"] >= 1  # once upgraded
    finally:
        await close_all([client])


async def test_fast_fanout_off_leaves_engineio_sockets_alone(node: Node) -> None:
    node.manager.fast_fanout = False
    try:
        clients = await connected(node, 1)
        try:
            socket = _server_socket(node, node.sids[0])
            assert type(socket) is engineio.async_socket.AsyncSocket
            await node.emit("notification", durable(1))
            await clients[0].wait_for(1)
            assert clients[0].offsets() == [1]
        finally:
            await close_all(clients)
    finally:
        node.manager.fast_fanout = True



async def test_a_run_of_packets_with_a_binary_one_is_written_packet_by_packet(
        node: Node) -> None:
    """The writer's packets taken at once go in one write when all are text; a binary one
    among them: each on its own (its frame is a binary frame), in order, the socket up."""
    client = engineio.AsyncClient()
    got: list[Any] = []
    done = asyncio.Event()

    async def message(data: Any) -> None:
        got.append(data)
        if len(got) == 3:
            done.set()

    client.on("message", message)
    await client.connect(node.url, transports=["websocket"], engineio_path="socket.io")
    try:
        (socket,) = node.sio.eio.sockets.values()
        assert isinstance(socket, direct.DirectSocket)
        await _idle(socket)
        for data in ("a", b"\x00\x01", "b"):  # in one loop turn: the writer takes all three
            socket.queue.put_nowait(engineio.packet.Packet(engineio.packet.MESSAGE, data))
        await asyncio.wait_for(done.wait(), 5)
        assert got == ["a", b"\x00\x01", "b"]
        assert not socket.closed
    finally:
        await client.disconnect()
