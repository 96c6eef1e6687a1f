"""Web nodes receive only their rooms (issue 16): the relay publishes each stream on its own
channel, and a node subscribes to it while one of its sockets is in the room.

Two real web nodes and a real Celery worker on one PostgreSQL and one Redis; real
Socket.IO clients over websockets.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import httpx
import pytest
import redis as redis_lib
import socketio

from app.core.channels import room_channel
from app.outbox.replay import read_head
from testkit.clients import SocketClient
from testkit.eventually import eventually_async
from testkit.ops import scrape
from testkit.processes import WebNode
from testkit.world import World

CHANNEL = os.environ.get("HERALD_SOCKETIO_CHANNEL", "socketio")
RACE_ROUNDS = 12


@pytest.fixture(scope="module")
def second(world: World) -> WebNode:
    """A second web node on the same database and Redis."""
    return world.system.add_web()


def received(node: WebNode) -> float:
    """`herald_node_messages_received_total` of `node`: messages it took off Redis."""
    answer = httpx.get(f"{node.url}/metrics", timeout=10)
    assert answer.status_code == 200
    samples = scrape(answer.text)
    [value] = [v for (name, _), v in samples.items()
               if name == "herald_node_messages_received_total"]
    return value


def durable(socket: SocketClient) -> int:
    """Durable events a socket received (they carry their stream and offset)."""
    return sum(1 for e in list(socket.events) if isinstance(e.meta, dict) and "offset" in e.meta)


def stream_head(world: World, stream: str) -> int:
    with world.system.factory() as session, session.begin():
        return read_head(session, stream).offset


def subscribers(redis_url: str, stream: str) -> int:
    """How many connections are subscribed to `stream`'s channel (web nodes, here)."""
    client = redis_lib.Redis.from_url(redis_url)
    try:
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB", room_channel(CHANNEL, stream))
    finally:
        client.close()
    return int(reply[1])


async def until(check: Any, what: str, timeout: float = 15) -> None:
    await eventually_async(check, what, timeout, interval=0.05)


def test_a_node_with_no_socket_in_a_room_receives_none_of_its_events(
    world: World, second: WebNode,
) -> None:
    client_id, client_tok = world.api.user("client")
    project = world.api.project(client_id)
    other_id, other_tok = world.api.user("client")
    other = world.api.project(other_id)

    async def run() -> None:
        socket = SocketClient(world.url, client_tok)  # in `project` on the first node only
        elsewhere = SocketClient(second.url, other_tok)  # the second node: `other` only
        try:
            for sock, joined in ((socket, project), (elsewhere, other)):
                await sock.connect()
                assert (await sock.call("join-project", joined))["ok"]
            before, seen = received(second), durable(elsewhere)
            for progress in range(1, 11):
                world.api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
            await socket.wait_count("project-updated", 10)
            # the second node listens (its socket's rooms are delivered, in order after
            # whatever came before) yet took none of them off Redis: only its own rooms'
            world.api.ok("PATCH", f"/api/projects/{other}", json={"progress": 1})
            await elsewhere.wait_count("project-updated", 1)
            await until(lambda: received(second) - before == durable(elsewhere) - seen,
                        f"the second node took {received(second) - before} messages off "
                        f"Redis for {durable(elsewhere) - seen} events of its rooms")
            assert durable(elsewhere) - seen > 0
        finally:
            await socket.close()
            await elsewhere.close()

    asyncio.run(run())


def test_an_event_right_after_a_join_on_a_node_new_to_the_room_is_never_lost(
    world: World, second: WebNode,
) -> None:
    """The join's replay reads the event table only once the node's subscription to the
    room is confirmed: messages posted while the join runs arrive, replayed or live."""
    client_id, client_tok = world.api.user("client")
    project = world.api.project(client_id)
    tickets = [world.api.ticket(project) for _ in range(RACE_ROUNDS)]

    def post(ticket: int, count: int) -> None:
        for i in range(count):
            world.api.ok("POST", f"/api/tickets/{ticket}/messages", json={"message": f"m{i}"})

    async def run() -> None:
        socket = SocketClient(second.url, client_tok)  # no socket of any ticket there
        await socket.connect()
        try:
            for ticket in tickets:
                stream = f"ticket-{ticket}"
                poster = threading.Thread(target=post, args=(ticket, 3))
                poster.start()
                ack = await socket.call("join-ticket", ticket)
                await asyncio.to_thread(poster.join)
                assert ack["ok"], ack
                head = stream_head(world, stream)

                def offsets(stream: str = stream) -> list[int]:
                    return sorted({e.meta["offset"] for e in list(socket.events)
                                   if e.meta and e.meta.get("stream") == stream})
                if head > ack["offset"]:
                    await until(lambda o=offsets, h=head: bool(o()) and o()[-1] >= h,
                                f"{stream}: {offsets()} of {head}")
                assert offsets() == list(range(ack["offset"] + 1, head + 1)), ack
        finally:
            await socket.close()

    asyncio.run(run())


def test_a_plain_python_socketio_emit_reaches_sockets_on_every_node(
    world: World, second: WebNode, redis_url: str,
) -> None:
    client_id, client_tok = world.api.user("client")
    project = world.api.project(client_id)

    async def run() -> None:
        here, there = SocketClient(world.url, client_tok), SocketClient(second.url, client_tok)
        emitter = socketio.AsyncRedisManager(redis_url, channel=CHANNEL, write_only=True)
        try:
            for socket in (here, there):
                await socket.connect()
                assert (await socket.call("join-project", project))["ok"]
            await emitter.emit("announcement", {"text": "hi"}, room=f"project-{project}")
            await emitter.emit("to-everyone", {"text": "all"})
            for socket in (here, there):
                await socket.wait_count("announcement", 1)
                await socket.wait_count("to-everyone", 1)
        finally:
            for socket in (here, there):
                await socket.close()

    asyncio.run(run())


def test_typing_reaches_a_socket_of_the_ticket_on_another_node(
    world: World, second: WebNode,
) -> None:
    client_id, client_tok = world.api.user("client")
    project = world.api.project(client_id)
    ticket = world.api.ticket(project)

    async def run() -> None:
        typist, reader = SocketClient(world.url, client_tok), SocketClient(second.url, client_tok)
        try:
            for socket in (typist, reader):
                await socket.connect()
                assert (await socket.call("join-ticket", ticket))["ok"]
            assert (await typist.call("typing-start", {"ticketId": ticket}))["ok"]
            [typing] = await reader.wait_count("user-typing", 1)
            assert typing.payload["isTyping"] is True
        finally:
            for socket in (typist, reader):
                await socket.close()

    asyncio.run(run())


@pytest.mark.parametrize("how", ["leave", "disconnect", "revoke"])
def test_a_node_unsubscribes_a_room_when_its_last_local_socket_goes(
    world: World, second: WebNode, redis_url: str, how: str,
) -> None:
    client_id, _ = world.api.user("client")
    tech_id, tech_tok = world.api.user("technician")
    project = world.api.project(client_id, [tech_id])
    stream = f"project-{project}"

    async def run() -> None:
        socket = SocketClient(second.url, tech_tok)
        await socket.connect()
        try:
            assert subscribers(redis_url, stream) == 0
            assert (await socket.call("join-project", project))["ok"]
            assert subscribers(redis_url, stream) == 1  # confirmed before the join answered
            if how == "leave":
                assert (await socket.call("leave-project", project))["ok"]
            elif how == "disconnect":
                await socket.close()
            else:  # taken off the project through the first node
                world.api.ok("PATCH", f"/api/projects/{project}", json={"technicianIds": []})
            await until(lambda: subscribers(redis_url, stream) == 0,
                        f"{stream} still subscribed after {how}")
        finally:
            await socket.close()

    asyncio.run(run())
