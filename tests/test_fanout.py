"""The fan-out fast path (app/gateway/fanout.py): what python-socketio's room emit does,
without a task per socket.

A real AsyncServer with Herald's manager runs in this process under a real uvicorn, with
real clients over real websockets; room messages are handed to the manager as its Redis
listener hands them (`_handle_emit`, python-socketio's pub/sub message format).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import engineio
import pytest
import socketio
import uvicorn
from websockets.asyncio.client import connect as ws_connect

from app.gateway import fanout
from app.gateway.manager import HeraldRedisManager
from testkit.eventually import eventually_async
from testkit.processes import free_port
from testkit.testrun import fresh_name

pytestmark = pytest.mark.anyio
ROOM = "project-1"


@dataclass
class Node:
    url: str
    sio: socketio.AsyncServer
    manager: HeraldRedisManager
    sids: list[str] = field(default_factory=list)

    async def emit(self, event: str, data: list[Any], *, room: str = ROOM,
                   skip_sid: Any = None, binary: bool = False) -> None:
        """Deliver a message as the manager's Redis listener would."""
        await self.manager._handle_emit({
            "method": "emit", "event": event, "data": data, "binary": binary,
            "namespace": "/", "room": room, "skip_sid": skip_sid, "callback": None,
            "host_id": "elsewhere"})


def durable(offset: int, room: str = ROOM) -> list[Any]:
    return [{"n": offset}, {"stream": room, "offset": offset, "epoch": "e"}]


@pytest.fixture
async def node(redis_url: str) -> AsyncIterator[Node]:
    manager = HeraldRedisManager(redis_url, channel=fresh_name("fanout"))
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, logger=False,
                               engineio_logger=False)
    port = free_port()
    here = Node(f"http://127.0.0.1:{port}", sio, manager)

    @sio.on("connect")  # type: ignore[untyped-decorator]
    async def on_connect(sid: str, environ: Any, auth: Any = None) -> None:
        await sio.enter_room(sid, ROOM)
        here.sids.append(sid)

    config = uvicorn.Config(socketio.ASGIApp(sio), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off", ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually_async(lambda: server.started, "the node did not start")
    try:
        yield here
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class Client:
    """A python-socketio client that records (event, args) in arrival order."""

    def __init__(self) -> None:
        self.got: list[tuple[str, tuple[Any, ...]]] = []
        self.sio = socketio.AsyncClient(reconnection=False)

        @self.sio.on("*")  # type: ignore[untyped-decorator]
        async def any_event(name: str, *args: Any) -> None:
            self.got.append((name, args))

    async def connect(self, url: str) -> None:
        await self.sio.connect(url, transports=["websocket"], wait_timeout=10)

    def offsets(self) -> list[int]:
        return [args[1]["offset"] for _, args in self.got]

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        await eventually_async(lambda: len(self.got) >= count,
                               lambda: f"{count} events expected, got {self.got}", timeout)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        await eventually_async(predicate, lambda: f"not arrived; got {self.got}", 10)


async def connected(node: Node, count: int) -> list[Client]:
    clients = [Client() for _ in range(count)]
    await asyncio.gather(*(c.connect(node.url) for c in clients))
    await eventually_async(lambda: len(node.sids) >= count, "sockets did not connect")
    return clients


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.sio.disconnect() for c in clients), return_exceptions=True)


async def test_every_socket_gets_every_event_in_order(node: Node) -> None:
    clients = await connected(node, 20)
    try:
        for offset in range(1, 201):
            await node.emit("notification", durable(offset))
        for client in clients:
            await client.wait_for(200)
        for client in clients:
            assert client.offsets() == list(range(1, 201))
            assert client.got[0] == ("notification", tuple(durable(1)))
    finally:
        await close_all(clients)


async def test_gated_socket_gets_nothing_live_and_its_floor_skips_what_replay_sent(
        node: Node) -> None:
    free, gated = await connected(node, 2)
    gated_sid = node.sids[1]
    try:
        node.manager.open_gate(gated_sid, ROOM)
        await node.emit("notification", durable(1))
        await node.emit("notification", durable(2))
        assert [offset for offset, _, _ in node.manager.ordering.take(gated_sid, ROOM).events] == [
            1, 2]
        node.manager.close_gate(gated_sid, ROOM, floor=2)  # "replay sent through 2"
        await node.emit("notification", durable(2))  # a lagging relay's duplicate
        await node.emit("notification", durable(3))
        await free.wait_for(4)
        # 3 went out last on the same channel: once `gated` has it, anything wrongly sent
        # to `gated` before it (1, 2 or the duplicate 2) has arrived too.
        await gated.wait_until(lambda: 3 in gated.offsets())
        assert free.offsets() == [1, 2, 2, 3]
        assert gated.offsets() == [3]
    finally:
        await close_all([free, gated])


async def test_skip_sid_is_not_sent_the_event(node: Node) -> None:
    sender, other = await connected(node, 2)
    try:
        await node.emit("user-typing", [{"isTyping": True}], skip_sid=node.sids[0])
        await node.emit("user-typing", [{"isTyping": False}])
        await other.wait_for(2)
        # The second emit reaches the sender after the first would have: it is the sentinel.
        await sender.wait_until(lambda: any(args[0]["isTyping"] is False
                                            for _, args in sender.got))
        assert [args[0]["isTyping"] for _, args in other.got] == [True, False]
        assert [args[0]["isTyping"] for _, args in sender.got] == [False]
    finally:
        await close_all([sender, other])


async def test_binary_event_takes_python_socketios_path_and_arrives(node: Node) -> None:
    (client,) = await connected(node, 1)
    try:
        await node.sio.emit("blob", {"data": b"\x00\x01"}, room=ROOM)
        await client.wait_for(1)
        assert client.got == [("blob", ({"data": b"\x00\x01"},))]
    finally:
        await close_all([client])


async def test_wire_frames_equal_python_socketios_own_emit(node: Node) -> None:
    url = node.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    data = [{"title": "é ✓ \"q\"", "n": [1, 2.5, None, True], "nested": {"a": {}}},
            {"stream": ROOM, "offset": 7, "epoch": "e"}]
    async with ws_connect(url) as ws:
        assert str(await ws.recv()).startswith("0{")  # engine.io OPEN
        await ws.send("40")
        assert str(await ws.recv()).startswith("40{")  # Socket.IO CONNECT
        frames = []
        for fast in (True, False):
            node.manager.fast_fanout = fast
            await node.emit("notification", data)
            await node.emit("single", [{"only": 1}])
            frames.append([await ws.recv(), await ws.recv()])
        node.manager.fast_fanout = True
    assert frames[0] == frames[1]
    assert json.loads(str(frames[0][0])[2:]) == ["notification", *data]


# -- put_all on real engine.io sockets (no network) ------------------------------------
def _sockets(count: int) -> tuple[Any, list[Any]]:
    eio = engineio.AsyncServer(async_mode="asgi")
    sockets = []
    for i in range(count):
        socket = engineio.async_socket.AsyncSocket(eio, f"eio-{i}")
        eio.sockets[socket.sid] = socket
        sockets.append(socket)
    return eio, sockets


async def test_put_all_skips_closed_closing_and_skipped_sockets() -> None:
    eio, (ok, closed, closing, skipped) = _sockets(4)
    closed.closed = True
    closing.closing = True
    pkt = engineio.packet.Packet(engineio.packet.MESSAGE, "2[\"e\"]")
    participants = [(f"sid-{s.sid}", s.sid) for s in (ok, closed, closing, skipped)]
    participants.append(("sid-gone", "eio-gone"))  # its engine.io socket already went away
    late = fanout.put_all(eio, pkt, participants, {"sid-eio-3"})
    assert late == []
    assert [s.queue.qsize() for s in (ok, closed, closing, skipped)] == [1, 0, 0, 0]
    assert ok.queue.get_nowait() is pkt


async def test_put_all_leaves_a_socket_past_its_ping_timeout_to_engineio() -> None:
    eio, (alive, silent) = _sockets(2)
    silent.last_ping = time.time() - eio.ping_timeout - 1  # pinged, never answered
    pkt = engineio.packet.Packet(engineio.packet.MESSAGE, "2[\"e\"]")
    late = fanout.put_all(eio, pkt, [("a", alive.sid), ("b", silent.sid)], set())
    assert late == [silent]
    assert (alive.queue.qsize(), silent.queue.qsize()) == (1, 0)
