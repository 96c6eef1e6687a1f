"""Client events named like python-socketio's reserved ones reach no handler (issue 15).

A client's EVENT packet named `disconnect` ran the server's disconnect handler on a socket
that stayed open (it then escaped later room changes); one named `connect` switched the
socket's identity. Such events, and any other unknown one, are answered `unknown_event`
(rate-limited, their log lines bounded); a DISCONNECT packet closes the transport.
Against real web nodes, with real Socket.IO clients and raw websockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from app.gateway.gcpolicy import SocketGC
from app.portal import projects
from testkit.clients import SocketClient, sentinel, token
from testkit.localnode import local_node
from testkit.system import System
from testkit.world import World

RESERVED = ["disconnect", "connect", "connect_error", "*", "disconnecting", "message"]


def test_a_technician_who_emitted_disconnect_still_leaves_a_project_he_is_taken_off(
    world: World
) -> None:
    client_id, client_tok = world.api.user("client")
    tech_id, tech_tok = world.api.user("technician")
    project = world.api.project(client_id, [tech_id])
    ticket = world.api.ticket(project)

    async def run() -> tuple[SocketClient, Any, Any]:
        tech = SocketClient(world.url, tech_tok)
        client = SocketClient(world.url, client_tok)
        for socket in (tech, client):
            await socket.connect()
            assert (await socket.call("join-project", project))["ok"]
            assert (await socket.call("join-ticket", ticket))["ok"]
        try:
            fake = await tech.call("disconnect", timeout=5)
            await tech.sio.emit("disconnect")  # and without an ack
            assert (await tech.call("heartbeat"))["ok"]  # the socket is still open
            removed = world.api.request("PATCH", f"/api/projects/{project}",
                                        json={"technicianIds": []})
            assert removed.status_code == 200, removed.text
            await client.wait_count("project-updated", 1)
            world.api.ok("PATCH", f"/api/projects/{project}", json={"progress": 42})
            world.api.ok("POST", f"/api/tickets/{ticket}/messages", json={"message": "hi"})
            await client.wait_count("project-updated", 2)
            await client.wait_count("new-message", 1)
            await sentinel(world.api, tech, tech_id)  # what the node sent tech before is in
            typing = await tech.call("typing-start", {"ticketId": ticket})
        finally:
            await tech.close()
            await client.close()
        return tech, fake, typing

    tech, fake, typing = asyncio.run(run())
    assert [e.payload["progress"] for e in tech.named("project-updated")] in ([], [0])
    assert tech.named("new-message") == []
    assert typing["ok"] is False and typing["error"]["code"] == "not_found"  # not his any more
    assert fake == {"ok": False, "error": {"code": "unknown_event",
                                           "message": "unknown event 'disconnect'"}}


def test_a_connect_event_cannot_switch_a_sockets_identity(world: World) -> None:
    _, tok = world.api.user("client")
    admin = world.token("admin")
    project = world.project  # the client above is not in it

    async def run() -> tuple[Any, Any, Any]:
        socket = SocketClient(world.url, tok)
        await socket.connect()
        try:
            switched = await socket.call(
                "connect", ({"HTTP_AUTHORIZATION": f"Bearer {admin}"}, {"token": admin}),
                timeout=5)
            joined = await socket.call("join-project", project)
            return switched, joined, (await socket.call("heartbeat"))
        finally:
            await socket.close()

    switched, joined, heartbeat = asyncio.run(run())
    assert switched["ok"] is False and switched["error"]["code"] == "unknown_event"
    assert joined["ok"] is False and joined["error"]["code"] == "not_found"  # not hers to see
    assert heartbeat["ok"] is True


@pytest.mark.parametrize("name", RESERVED)
def test_every_reserved_name_is_answered_unknown_event(world: World, name: str) -> None:
    async def run() -> tuple[Any, Any]:
        socket = SocketClient(world.url, world.token("client"))
        await socket.connect()
        try:
            return await socket.call(name, {"x": 1}, timeout=5), await socket.call("heartbeat")
        finally:
            await socket.close()

    answer, heartbeat = asyncio.run(run())
    assert answer["ok"] is False and answer["error"]["code"] == "unknown_event", answer
    assert heartbeat["ok"] is True


async def _raw_connect(url: str, tok: str) -> Any:
    """A raw websocket that has done engine.io's handshake and Socket.IO's CONNECT."""
    ws = await ws_connect(url.replace("http://", "ws://")
                          + "/socket.io/?EIO=4&transport=websocket")
    opened = await ws.recv()
    assert isinstance(opened, str) and opened.startswith("0{")
    await ws.send("40" + json.dumps({"token": tok}))
    while True:
        packet = await ws.recv()
        if isinstance(packet, str) and packet.startswith("40"):
            return ws


def test_event_names_that_are_not_strings_are_answered_unknown_event(world: World) -> None:
    async def run() -> list[Any]:
        ws = await _raw_connect(world.url, world.token("client"))
        answers = []
        try:
            for i, body in enumerate(("[1]", "[null]", "[]", '[{"a":1}]')):
                await ws.send(f"42{i}{body}")
                while True:
                    packet = await ws.recv()
                    if isinstance(packet, str) and packet.startswith(f"43{i}"):
                        answers.append(json.loads(packet[len(f"43{i}"):])[0])
                        break
        finally:
            await ws.close()
        return answers

    for answer in asyncio.run(run()):
        assert answer["ok"] is False and answer["error"]["code"] == "unknown_event", answer


def test_a_namespace_disconnect_packet_closes_the_transport(world: World) -> None:
    async def run() -> bool:
        ws = await _raw_connect(world.url, world.token("client"))
        await ws.send("41")
        try:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        except ConnectionClosed:
            return True
        except TimeoutError:
            return False
        finally:
            await ws.close()

    assert asyncio.run(run()) is True


def _user(system: System, role: str = "client") -> int:
    with system.factory() as session, session.begin():
        return projects.create_user(session, email=f"{role}-{uuid.uuid4().hex[:8]}@test",
                                    role=role, name=role).id


@pytest.mark.anyio
async def test_fake_disconnect_events_are_not_counted_as_closes(
    pg_system_session: System, redis_url: str
) -> None:
    uid = _user(pg_system_session)
    async with local_node(pg_system_session, redis_url) as node:
        policy = SocketGC(lambda: 0, every=3600)
        node.gateway.gc_policy = policy
        socket = SocketClient(node.url, token(uid, "client"))
        await socket.connect()
        try:
            for _ in range(50):
                await socket.sio.emit("disconnect")
            assert (await socket.call("heartbeat"))["ok"]
            assert policy.closed == 0
        finally:
            await socket.close()
        await socket.wait_for(lambda: policy.closed == 1)
        policy.stop()


@pytest.mark.anyio
async def test_unknown_events_are_rate_limited_and_logged_within_a_budget(
    pg_system_session: System, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from app.gateway.bounds import SocketBounds

    uid = _user(pg_system_session)
    caplog.set_level(logging.INFO, logger="herald.gateway")
    async with local_node(pg_system_session, redis_url,
                          bounds=SocketBounds(unknown_events_per_minute=5)) as node:
        socket = SocketClient(node.url, token(uid, "client"))
        await socket.connect()
        try:
            answers = [await socket.call("no-such-event", {"i": i}, timeout=5)
                       for i in range(8)]
            for i in range(300):
                await socket.sio.emit("x" * 10_000, {"i": i})  # no ack asked
            assert (await socket.call("heartbeat"))["ok"]
        finally:
            await socket.close()
    codes = [a["error"]["code"] for a in answers]
    assert codes == ["unknown_event"] * 5 + ["rate_limited"] * 3
    assert answers[-1]["error"]["retryAfter"] >= 1
    lines = [r.getMessage() for r in caplog.records if "unknown event" in r.getMessage()]
    assert len(lines) <= 6, len(lines)
    assert all(len(line) < 300 for line in lines)


@pytest.mark.anyio
async def test_malformed_packets_close_the_transport_with_one_bounded_line_each(
    pg_system_session: System, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with local_node(pg_system_session, redis_url) as node:
        async def one(i: int) -> bool:
            ws = await ws_connect(node.url.replace("http://", "ws://")
                                  + "/socket.io/?EIO=4&transport=websocket")
            assert str(await ws.recv()).startswith("0{")
            await ws.send(["49", "42[", "4x" * 5000][i % 3])  # no CONNECT: unauthenticated
            try:
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            except ConnectionClosed:
                return True
            finally:
                await ws.close()
        closed = sum(await asyncio.gather(*(one(i) for i in range(60))))
    assert closed == 60
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    lines = [r.getMessage() for r in caplog.records if "malformed packet" in r.getMessage()]
    assert 1 <= len(lines) < 60 and all(len(line) < 300 for line in lines)
