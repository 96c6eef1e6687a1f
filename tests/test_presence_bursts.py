"""Presence in bursts, on a real web node (its own process, a short HERALD_PRESENCE_TTL and
the smallest send queue HERALD_SOCKET_QUEUE_PACKETS allows): presence is state that may
wait and be coalesced, never a reason to close a client's connection, and never sent
before a socket's `connected` (docs/protocol.md, "Presence").

The dying node is a roster of this process on the same Redis (the scripts a web node runs):
thousands of users in one ticket room, then its liveness key gone as a SIGKILL leaves it.
The clients here speak Engine.IO 4 / Socket.IO 5 by hand: one over long-polling that stops
polling (whatever the node sends it then waits in its send queue: a websocket's would sit
in the kernel's buffers first, megabytes of them), others over websockets, to see exactly
which frame came before `connected`."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import socketio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.gateway.roster import Member, Roster
from testkit.clients import Api
from testkit.eventually import eventually_async
from testkit.processes import WebNode
from testkit.system import System
from testkit.world import World

pytestmark = pytest.mark.anyio
TTL = 1.0
DEAD_USERS = 2000  # leaves: 20 times the send queue's bound in packets
QUEUE_PACKETS = 100


@pytest.fixture(scope="module")
def node(pg_system_session: System, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[WebNode]:
    env = {**pg_system_session.env, "HERALD_PRESENCE_TTL": str(TTL),
           "HERALD_SOCKET_QUEUE_PACKETS": str(QUEUE_PACKETS)}
    web = WebNode(env, tmp_path_factory.mktemp("presence-bursts"))
    web.start()
    yield web
    web.stop()


def channel(system: System) -> str:
    return system.env.get("HERALD_SOCKETIO_CHANNEL", os.environ["HERALD_SOCKETIO_CHANNEL"])


def roster_prefix(system: System) -> str:
    """The web nodes' roster keys (app/gateway/server.py: one hash tag for all)."""
    return f"{{{channel(system)}}}:roster"


class Raw:
    """A Socket.IO client over a raw websocket: frames in order, acks by id, pings answered."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[str] = []  # every Socket.IO frame received, in order
        self.closed = False
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, auth: dict[str, Any]) -> Raw:
        ws = await connect(f"ws://{urlsplit(url).netloc}/socket.io/?EIO=4&transport=websocket",
                           compression=None)
        raw = cls(ws)
        await ws.send("40" + json.dumps(auth))
        return raw

    async def _read(self) -> None:
        try:
            while True:
                text = await self.ws.recv()
                assert isinstance(text, str)
                if text == "2":
                    await self.ws.send("3")
                elif text.startswith("43"):
                    digits = text[2:len(text) - len(text[2:].lstrip("0123456789"))]
                    future = self._acks.pop(int(digits), None)
                    if future is not None and not future.done():
                        future.set_result(json.loads(text[2 + len(digits):])[0])
                elif text.startswith("4"):
                    self.frames.append(text)
        except ConnectionClosed:
            self.closed = True

    async def call(self, event: str, data: Any) -> Any:
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[self._next_id] = future
        await self.ws.send(f"42{self._next_id}" + json.dumps([event, data]))
        return await asyncio.wait_for(future, 10)

    def events(self) -> list[tuple[str, Any]]:
        return [(args[0], args[1] if len(args) > 1 else None)
                for args in (json.loads(f[2:]) for f in self.frames if f.startswith("42"))]

    def connected(self) -> bool:
        return any(name == "connected" for name, _ in self.events())

    async def close(self) -> None:
        self._task.cancel()
        await self.ws.close()


class Polling:
    """A Socket.IO client over Engine.IO long-polling that polls only when told: between
    two polls, whatever the node sends it waits in the socket's send queue."""

    def __init__(self, http: httpx.AsyncClient, path: str) -> None:
        self.http, self.path = http, path
        self.frames: list[str] = []
        self.acks: dict[int, Any] = {}
        self.closed = False
        self._next_id = 0

    @classmethod
    async def open(cls, url: str, auth: dict[str, Any]) -> Polling:
        http = httpx.AsyncClient(base_url=url, timeout=30)
        opened = (await http.get("/socket.io/?EIO=4&transport=polling")).text
        sid = json.loads(opened[1:])["sid"]
        client = cls(http, f"/socket.io/?EIO=4&transport=polling&sid={sid}")
        await client.send("40" + json.dumps(auth))
        return client

    async def send(self, packet: str) -> None:
        response = await self.http.post(self.path, content=packet)
        self.closed = self.closed or response.status_code != 200

    async def poll(self) -> None:
        """One long-poll: every packet the node has queued (or the next one)."""
        response = await self.http.get(self.path)
        if response.status_code != 200:
            self.closed = True
            return
        for packet in response.text.split("\x1e"):
            if packet == "2":
                await self.send("3")
            elif packet == "1":
                self.closed = True
            elif packet.startswith("43"):
                digits = packet[2:len(packet) - len(packet[2:].lstrip("0123456789"))]
                self.acks[int(digits)] = json.loads(packet[2 + len(digits):])[0]
            elif packet.startswith("42"):
                self.frames.append(packet)

    async def call(self, event: str, data: Any) -> Any:
        self._next_id += 1
        await self.send(f"42{self._next_id}" + json.dumps([event, data]))
        await eventually_async(self._answered(self._next_id), f"ack of {event}")
        return self.acks.pop(self._next_id)

    def _answered(self, ack_id: int) -> Any:
        async def answered() -> bool:
            if ack_id not in self.acks:
                await self.poll()
            return ack_id in self.acks
        return answered

    def events(self) -> list[tuple[str, Any]]:
        return [(args[0], args[1] if len(args) > 1 else None)
                for args in (json.loads(f[2:]) for f in self.frames)]

    def connected(self) -> bool:
        return any(name == "connected" for name, _ in self.events())

    async def close(self) -> None:
        await self.http.aclose()


def view(ack: dict[str, Any], events: list[tuple[str, Any]], stream: str) -> set[int]:
    """Who the client thinks is in `stream`: the join ack's list, then the presence events
    that followed it (as the clients apply them: a join sets, a leave deletes)."""
    members = {m["userId"] for m in ack["presence"]}
    for name, payload in events:
        if not isinstance(payload, dict) or payload.get("stream") != stream:
            continue
        if name == "presence-join":
            members.add(payload["user"]["userId"])
        elif name == "presence-leave":
            members.discard(payload["userId"])
    return members


@pytest.fixture
async def dying(redis_url: str, pg_system_session: System) -> AsyncIterator[Roster]:
    async def no_emit(*_: Any) -> None:
        return None
    roster = Roster(redis_url, prefix=roster_prefix(pg_system_session), ttl=600,
                    emit=no_emit, in_room=lambda sid, room: True)
    roster._start = lambda: None  # type: ignore[method-assign]  # it never beats: it dies
    yield roster
    await roster.redis.delete(roster._key("alive", roster.node))
    await roster.redis.aclose()


async def fill(roster: Roster, stream: str, users: int) -> None:
    """`users` users in `stream` on the roster's node, which is alive meanwhile."""
    await roster.redis.set(roster._key("alive", roster.node), "1")  # until the test kills it
    base = 10_000_000 + uuid.uuid4().int % 1_000_000 * 10_000
    for start in range(0, users, 50):  # 50 at a time: within a Redis client's pool
        await asyncio.gather(*(roster.enter(f"dead-{i}", Member(base + i, f"gone {i}",
                                                                "technician"), stream)
                               for i in range(start, min(start + 50, users))))


@pytest.mark.timeout(300)
async def test_a_dead_nodes_thousands_of_leaves_close_no_socket_and_every_view_converges(
        world: World, node: WebNode, dying: Roster) -> None:
    ticket = world.fresh_ticket()
    stream = f"ticket-{ticket}"
    await fill(dying, stream, DEAD_USERS)
    slow = await Polling.open(node.url, {"token": world.token("technician")})
    brisk = await Raw.open(node.url, {"token": world.token("client")})
    http = Api(node.url, world.system.admin_token)
    try:
        async def slow_connected() -> bool:
            await slow.poll()
            return slow.connected()
        await eventually_async(slow_connected, "the poller's connected")
        await eventually_async(lambda: brisk.connected(), "connected")
        acks, seen = [], []  # each join's ack, and the events before it
        for client in (slow, brisk):
            acks.append(await client.call("join-ticket", ticket))
            seen.append(len(client.events()))
        live = {world.ids["technician"], world.ids["client"]}
        assert all(a["ok"] and len(a["presence"]) >= DEAD_USERS for a in acks)
        await dying.redis.delete(dying._key("alive", dying.node))  # killed: swept within TTL

        def swept() -> bool:
            members = http.ok("GET", f"/api/streams/{stream}/presence")["members"]
            return {m["userId"] for m in members} == live

        def views() -> list[set[int]]:
            return [view(ack, client.events()[n:], stream)
                    for ack, client, n in zip(acks, (slow, brisk), seen, strict=True)]
        await eventually_async(lambda: asyncio.to_thread(swept), "swept", timeout=30)
        await eventually_async(lambda: views()[1] == live, "the websocket's view", timeout=30)
        # The poller polled nothing meanwhile: thousands of leaves were for its queue.

        async def slow_converged() -> bool:
            await slow.poll()
            return slow.closed or views()[0] == live
        await eventually_async(slow_converged, lambda: (
            f"the poller's view: {len(views()[0] ^ live)} differ, "
            f"{len(slow.events()) - seen[0]} events since its join"), timeout=60)
        assert not slow.closed and not brisk.closed
    finally:
        http.close()
        await slow.close()
        await brisk.close()


async def test_no_presence_event_reaches_a_socket_before_its_connected(
        world: World, node: WebNode, pg_system_session: System, redis_url: str) -> None:
    ticket = world.fresh_ticket()
    stream = f"ticket-{ticket}"
    emitter = socketio.AsyncRedisManager(
        redis_url, channel=channel(pg_system_session), write_only=True)
    churning = asyncio.Event()
    churning.set()

    async def churn() -> None:
        """Presence changes in the room without a pause, as a busy room has them."""
        n = 0
        while churning.is_set():
            n += 1
            await emitter.emit("presence-join", {"stream": stream, "user": {
                "userId": 9_000_000 + n, "name": f"busy {n}", "role": "client"}}, room=stream)
    task = asyncio.create_task(churn())
    clients: list[Raw] = []
    try:
        token = world.token("technician")
        for _ in range(20):  # each restores the room at connect (`positions`)
            clients.append(await Raw.open(node.url, {"token": token, "positions": {
                stream: {"offset": 0}}}))
            await eventually_async(clients[-1].connected, "connected")
        assert all(c.events()[0][0] == "connected" for c in clients)
        assert any(name.startswith("presence-") for c in clients for name, _ in c.events())
    finally:
        churning.clear()
        await task
        for client in clients:
            await client.close()
