"""Ticket chat: messages through the outbox, typing straight through the room, retries, limits."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.portal.models import Message
from testkit.clients import SocketClient
from testkit.world import World

pytestmark = pytest.mark.anyio


async def _connected(world: World, *roles: str) -> list[SocketClient]:
    sockets = [SocketClient(world.url, world.token(role)) for role in roles]
    await asyncio.gather(*(s.connect() for s in sockets))
    return sockets


async def _close(sockets: list[SocketClient]) -> None:
    await asyncio.gather(*(s.close() for s in sockets))


def _messages(world: World, ticket: int) -> list[Message]:
    with world.system.factory() as session:
        return list(session.scalars(select(Message).where(Message.ticket_id == ticket)))


def _history(world: World, ticket: int) -> dict[str, Any]:
    result: dict[str, Any] = world.api.ok("GET", f"/api/streams/ticket-{ticket}/events")
    return result


async def test_typing_reaches_the_others_in_the_ticket_room_but_not_the_sender(
    world: World,
) -> None:
    ticket = world.fresh_ticket()
    sender, peer, admin = await _connected(world, "client", "technician", "admin")
    try:
        for s in (sender, peer):
            assert (await s.call("join-ticket", ticket))["ok"] is True
        start = await sender.call("typing-start", {"ticketId": ticket, "userName": "Ann"})
        stop = await sender.call("typing-stop", {"ticketId": ticket})
        assert start == {"ok": True} and stop == {"ok": True}

        typing = await peer.wait_count("user-typing", 2)
        assert [t.args for t in typing] == [
            ({"ticketId": ticket, "userId": world.ids["client"], "userName": "client",
              "isTyping": True},),
            ({"ticketId": ticket, "userId": world.ids["client"], "userName": "client",
              "isTyping": False},),
        ]  # the name on the user's record ("client"), never the one the client sent
        # a round trip on the sender's and the admin's sockets: anything sent before is in
        await sender.call("heartbeat")
        await admin.call("heartbeat")
        assert sender.named("user-typing") == []
        assert admin.named("user-typing") == []  # connected, but not in the ticket's room
    finally:
        await _close([sender, peer, admin])


async def test_typing_reaches_a_participant_connected_to_another_web_node(world: World
                                                                          ) -> None:
    ticket = world.fresh_ticket()
    node = world.system.add_web()
    try:
        sender = SocketClient(world.url, world.token("client"))
        peer = SocketClient(node.url, world.token("technician"))
        await asyncio.gather(sender.connect(), peer.connect())
        try:
            assert (await peer.call("join-ticket", ticket))["ok"] is True
            await sender.call("typing-start", {"ticketId": ticket, "userName": "Ann"})
            [typing] = await peer.wait_count("user-typing", 1)
            assert typing.args == ({"ticketId": ticket, "userId": world.ids["client"],
                                    "userName": "client", "isTyping": True},)
        finally:
            await _close([sender, peer])
    finally:
        node.stop()
        world.system.webs.remove(node)


async def test_typing_is_not_stored_in_the_stream_history(world: World) -> None:
    ticket = world.fresh_ticket()
    [sender] = await _connected(world, "technician")
    try:
        before = world.counts()
        for _ in range(3):
            ack = await sender.call("typing-start", {"ticketId": ticket, "userName": "Tom"})
            assert ack["ok"] is True
        assert world.counts() == before
        history = _history(world, ticket)
        assert history["events"] == [] and history["head"]["offset"] == 0
    finally:
        await sender.close()


async def test_typing_in_a_ticket_the_user_may_not_read_is_not_found(world: World) -> None:
    [outsider] = await _connected(world, "other-client")
    try:
        ack = await outsider.call("typing-start", {"ticketId": world.ticket, "userName": "X"})
        assert ack["ok"] is False and ack["error"]["code"] == "not_found"  # as if unknown
        assert outsider.sio.connected
    finally:
        await outsider.close()


async def test_sent_message_reaches_the_other_participant_with_meta(world: World) -> None:
    ticket = world.fresh_ticket()
    author, peer = await _connected(world, "client", "technician")
    try:
        assert (await peer.call("join-ticket", ticket))["ok"] is True
        ack = await author.call("send-message", {"ticketId": ticket, "message": "Leak again"})
        assert ack["ok"] is True and isinstance(ack["messageId"], int)
        [event] = await peer.wait_count("new-message", 1)
        assert event.payload["messageId"] == ack["messageId"]
        assert event.payload["message"] == "Leak again"
        assert event.payload["author"] == {"id": world.ids["client"],
                                           "email": "client@world.test"}
        assert event.meta is not None and event.meta["stream"] == f"ticket-{ticket}"
        assert event.meta["offset"] == 1
    finally:
        await _close([author, peer])


async def test_repeated_client_message_id_on_the_socket_stores_one_message(world: World
                                                                           ) -> None:
    ticket = world.fresh_ticket()
    [author] = await _connected(world, "client")
    try:
        body = {"ticketId": ticket, "message": "once", "clientMessageId": "m-1"}
        first = await author.call("send-message", body)
        again = await author.call("send-message", body)
        assert first["ok"] and again["ok"]
        assert again["messageId"] == first["messageId"]
        assert [m.id for m in _messages(world, ticket)] == [first["messageId"]]
        assert [e["type"] for e in _history(world, ticket)["events"]] == ["new-message"]
    finally:
        await author.close()


async def test_racing_sends_from_two_sockets_of_one_user_store_one_message(world: World
                                                                            ) -> None:
    ticket = world.fresh_ticket()
    tabs = await _connected(world, "client", "client", "client")
    try:
        body = {"ticketId": ticket, "message": "from every tab", "clientMessageId": "tab-race"}
        acks = await asyncio.gather(*(tab.call("send-message", body) for tab in tabs))
        assert all(ack["ok"] for ack in acks)
        assert len({ack["messageId"] for ack in acks}) == 1
        assert sorted(ack["duplicate"] for ack in acks) == [False, True, True]
        assert len(_messages(world, ticket)) == 1
    finally:
        await _close(tabs)


def test_client_message_id_reused_on_another_ticket_is_409(world: World) -> None:
    first, second = world.fresh_ticket(), world.fresh_ticket()
    body = {"message": "hi", "clientMessageId": uuid.uuid4().hex}
    world.api.ok("POST", f"/api/tickets/{first}/messages", world.token("client"), json=body)
    response = world.api.request("POST", f"/api/tickets/{second}/messages",
                                 world.token("client"), json=body)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_client_message_id"
    assert _messages(world, second) == []


def test_racing_http_retries_with_one_client_message_id_store_one_message(world: World
                                                                          ) -> None:
    ticket = world.fresh_ticket()
    cmid = uuid.uuid4().hex
    racers = 8
    barrier = threading.Barrier(racers)

    def post(_: int) -> tuple[int, int]:
        with httpx.Client(base_url=world.url, timeout=20) as http:
            barrier.wait()
            r = http.post(f"/api/tickets/{ticket}/messages",
                          json={"message": "race", "clientMessageId": cmid},
                          headers={"Authorization": f"Bearer {world.token('client')}"})
            return r.status_code, r.json()["id"]

    with ThreadPoolExecutor(racers) as pool:
        results = list(pool.map(post, range(racers)))

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (racers - 1) + [201]
    assert len({message_id for _, message_id in results}) == 1
    assert len(_messages(world, ticket)) == 1
    assert len(_history(world, ticket)["events"]) == 1


def test_same_client_message_id_from_two_users_stores_two_messages(world: World) -> None:
    ticket = world.fresh_ticket()
    body = {"message": "hello", "clientMessageId": "shared"}
    a = world.api.ok("POST", f"/api/tickets/{ticket}/messages", world.token("client"), json=body)
    b = world.api.ok("POST", f"/api/tickets/{ticket}/messages", world.token("technician"),
                     json=body)
    assert a["id"] != b["id"] and len(_messages(world, ticket)) == 2


@pytest.mark.parametrize(("message", "code"), [
    ("", "invalid_argument"), ("x" * 10_001, "invalid_argument"), (42, "invalid_argument"),
    ("nul\x00byte", "invalid_message"),
])
async def test_message_outside_the_limits_is_refused_on_the_socket_and_stores_nothing(
    world: World, message: Any, code: str
) -> None:
    [author] = await _connected(world, "client")
    try:
        before = world.counts()
        ack = await author.call("send-message", {"ticketId": world.ticket, "message": message})
        assert ack["ok"] is False and ack["error"]["code"] == code
        assert world.counts() == before and author.sio.connected
    finally:
        await author.close()


def test_message_of_exactly_ten_thousand_characters_is_stored(world: World) -> None:
    ticket = world.fresh_ticket()
    world.api.ok("POST", f"/api/tickets/{ticket}/messages", world.token("client"),
                 json={"message": "é" * 10_000})
    assert len(_messages(world, ticket)[0].body) == 10_000


@pytest.mark.parametrize("body", [
    {"message": ""}, {"message": "x" * 10_001}, {"message": "a\x00b"}, {"text": "hi"},
    {"message": "hi", "clientMessageId": ""}, {"message": "hi", "clientMessageId": "c" * 101},
])
def test_message_outside_the_limits_is_422_over_http_and_stores_nothing(
    world: World, body: dict[str, Any]
) -> None:
    before = world.counts()
    response = world.api.request("POST", f"/api/tickets/{world.ticket}/messages",
                                 world.token("client"), json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"].startswith("invalid")
    assert world.counts() == before


async def test_frame_over_one_megabyte_closes_that_connection_and_stores_nothing(
    world: World,
) -> None:
    [author] = await _connected(world, "client")
    before = world.counts()
    try:
        await author.sio.emit("send-message", {"ticketId": world.ticket,
                                               "message": "x" * 1_100_000})
        await author.wait_for(lambda: not author.sio.connected, timeout=10)
    finally:
        await author.close()
    assert world.counts() == before
    [again] = await _connected(world, "client")
    try:
        assert (await again.call("heartbeat"))["ok"] is True
    finally:
        await again.close()
