"""Per-user rate limits and caps (SPEC "Limits"): one user's flood is refused, others go on.

A web node with small limits (settings) on the shared PostgreSQL system; each test uses
users of its own, since the windows are kept in Redis per user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import socketio

from app.outbox.writer import ensure_stream
from testkit.clients import Api, SocketClient
from testkit.eventually import eventually_async
from testkit.processes import WebNode
from testkit.world import World

SMALL = {"HERALD_RATE_MESSAGES": "5/minute", "HERALD_RATE_TYPING": "5/minute",
         "HERALD_RATE_JOINS": "5/minute", "HERALD_RATE_CONNECTS": "8/minute",
         "HERALD_MAX_CONNECTIONS_PER_USER": "3"}


@pytest.fixture(scope="module")
def node(world: World) -> Iterator[WebNode]:
    # A channel of its own: rate windows are keyed by channel and user id, and user ids
    # start again at 1 in every module.
    channel = f"{os.environ['HERALD_SOCKETIO_CHANNEL']}-limits-{uuid.uuid4().hex[:6]}"
    web = WebNode({**world.system.env, **SMALL, "HERALD_SOCKETIO_CHANNEL": channel},
                  world.system.log_dir)
    web.start()
    try:
        yield web
    finally:
        web.stop()


def _member(world: World) -> tuple[int, str, int]:
    """A new client with a project and a ticket of their own: (user id, token, ticket)."""
    uid, tok = world.api.user("client")
    project = world.api.project(uid)
    return uid, tok, world.api.ticket(project)


def _calls(url: str, tok: str, name: str, args: list[Any]) -> list[Any]:
    async def run() -> list[Any]:
        socket = SocketClient(url, tok)
        await socket.connect()
        try:
            return [await socket.call(name, a) for a in args]
        finally:
            await socket.close()
    return asyncio.run(run())


def _limited(ack: Any) -> bool:
    error = ack.get("error", {}) if isinstance(ack, dict) else {}
    return (ack["ok"] is False and error.get("code") == "rate_limited"
            and isinstance(error.get("retryAfter"), int) and error["retryAfter"] > 0)


def test_send_message_past_the_limit_gets_rate_limited_and_stores_nothing(
    node: WebNode, world: World
) -> None:
    _uid, tok, ticket = _member(world)
    acks = _calls(node.url, tok, "send-message",
                  [{"ticketId": ticket, "message": f"m{i}"} for i in range(7)])
    assert all(a["ok"] for a in acks[:5]), acks
    assert all(_limited(a) for a in acks[5:]), acks[5:]
    page = world.api.ok("GET", f"/api/streams/ticket-{ticket}/events")
    assert len(page["events"]) == 5


def test_typing_past_the_limit_gets_rate_limited(node: WebNode, world: World) -> None:
    _uid, tok, ticket = _member(world)
    acks = _calls(node.url, tok, "typing-start", [{"ticketId": ticket}] * 6)
    assert all(a["ok"] for a in acks[:5]) and _limited(acks[5]), acks


def test_joins_past_the_limit_get_rate_limited(node: WebNode, world: World) -> None:
    _uid, tok, ticket = _member(world)
    acks = _calls(node.url, tok, "join-ticket", [ticket] * 6)
    assert all(a["ok"] for a in acks[:5]) and _limited(acks[5]), acks


def test_http_messages_share_the_limit_and_get_429(node: WebNode, world: World) -> None:
    _uid, tok, ticket = _member(world)
    _calls(node.url, tok, "send-message",
           [{"ticketId": ticket, "message": f"m{i}"} for i in range(5)])
    api = Api(node.url, tok)
    try:
        response = api.request("POST", f"/api/tickets/{ticket}/messages", json={"message": "x"})
    finally:
        api.close()
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "rate_limited"


def test_connects_past_the_limit_are_refused_with_rate_limited(
    node: WebNode, world: World
) -> None:
    _uid, tok, _ticket = _member(world)

    async def run() -> list[Any]:
        errors = []
        for _ in range(9):
            sio = socketio.AsyncClient(reconnection=False)
            seen: list[Any] = []
            sio.on("connect_error", seen.append)
            with contextlib.suppress(socketio.exceptions.ConnectionError):
                await sio.connect(node.url, auth={"token": tok}, transports=["websocket"],
                                  wait_timeout=10)
            errors.append(seen[0] if seen else None)
            if sio.connected:
                await sio.disconnect()
        return errors

    errors = asyncio.run(run())
    assert errors[:8] == [None] * 8
    assert errors[8]["data"]["code"] == "rate_limited", errors[8]
    assert errors[8]["data"]["retryAfter"] > 0


def test_a_user_past_the_connection_cap_is_refused_and_others_are_not(
    node: WebNode, world: World
) -> None:
    _uid, tok, _ticket = _member(world)
    _other, other_tok, _t = _member(world)

    async def run() -> tuple[list[Any], bool]:
        sockets = [SocketClient(node.url, tok) for _ in range(3)]
        for socket in sockets:
            await socket.connect()
        refused = SocketClient(node.url, tok)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect()
        other = SocketClient(node.url, other_tok)
        await other.connect()
        ok = other.sio.connected
        for socket in [*sockets, other]:
            await socket.close()
        return [refused.connect_error], ok

    [error], other_ok = asyncio.run(run())
    assert error["data"]["code"] == "rate_limited"
    assert other_ok


def test_positions_past_100_are_answered_not_recovered(node: WebNode, world: World) -> None:
    positions = {f"project-{1_000_000 + i}": {"offset": 0} for i in range(150)}
    with world.system.factory() as session, session.begin():  # restorable: they exist
        for name in positions:
            ensure_stream(session, name)

    async def run() -> dict[str, Any]:
        socket = SocketClient(node.url, world.token("admin"), positions=positions)
        await socket.connect()
        try:
            return (await socket.wait_count("connected", 1))[0].payload  # type: ignore[no-any-return]
        finally:
            await socket.close()

    connected = asyncio.run(run())
    names = list(positions)
    assert all(name in connected["positions"] for name in names[:100])
    assert not any(name in connected["positions"] for name in names[100:])
    assert not any(connected["recovered"][name] for name in names[100:])


def test_another_users_connect_is_served_before_one_users_flood_of_connects(
        world: World) -> None:
    _admin, flooder = world.api.user("admin")  # reads every stream: the most work per name
    _other, other_tok, _t = _member(world)
    positions = {f"ticket-{i}": {"offset": 0} for i in range(1, 201)}
    events = [{"stream": name, "type": "x", "data": {"n": n}} for name in positions
              for n in range(5)]
    service = {"Authorization": f"Bearer {world.token('service')}"}
    assert world.api.http.post("/api/events", headers=service, json=events).status_code == 201
    floods = 60

    async def run() -> int:
        settled = 0  # flood connects answered (connected or refused)

        async def flood() -> None:
            nonlocal settled
            socket = SocketClient(world.url, flooder, positions=positions)
            try:
                await socket.connect()
                await socket.wait_count("connected", 1, timeout=120)
            except (socketio.exceptions.ConnectionError, TimeoutError):
                pass
            finally:
                settled += 1
                await socket.close()
        tasks = [asyncio.create_task(flood()) for _ in range(floods)]
        await eventually_async(lambda: settled >= 1, "no connect of the flood was answered",
                               timeout=60)
        other = SocketClient(world.url, other_tok)
        await other.connect()
        await other.wait_count("connected", 1, timeout=60)
        unanswered = floods - settled
        await other.close()
        await asyncio.gather(*tasks)
        return unanswered

    unanswered = asyncio.run(run())
    # One user's connects take turns (a few at once): another user's connect goes ahead of
    # the flood's queue instead of behind it (before the turns, it came after nearly all).
    assert unanswered >= floods // 2, f"only {unanswered} of the flood were still waiting"
