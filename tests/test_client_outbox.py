"""herald_client's offline send queue against a real Herald (web nodes killed and restarted,
outbox files handed from one Subscriber to the next), and its pure logic over fakes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp import web
from herald_client import (
    Backoff,
    FileOutbox,
    Forbidden,
    HeraldError,
    Invalid,
    MemoryOutbox,
    NotFound,
    QueuedMessage,
    Subscriber,
    Unavailable,
)
from herald_client.errors import Conflict, error_from_ack
from herald_client.outbox import Outbox

from testkit.eventually import eventually_async
from testkit.processes import WebNode, free_port
from testkit.system import System

pytestmark = pytest.mark.anyio


def chat_user(system: System) -> tuple[str, int]:
    """A client's token and a ticket of theirs."""
    api = system.api()
    user_id, user_token = api.user("client")
    return user_token, api.ticket(api.project(user_id))


def stored(system: System, ticket: int) -> list[tuple[str, str]]:
    """(type, text) of every event in the ticket's stream history, in offset order."""
    body = system.api().ok("GET", f"/api/streams/ticket-{ticket}/events")
    return [(e["type"], e["payload"]["message"]) for e in body["events"]]


def queue(sub: Subscriber, ticket: int, *texts: str) -> list[asyncio.Task[dict[str, Any]]]:
    return [asyncio.create_task(sub.send_message(ticket, text)) for text in texts]


async def test_messages_sent_while_the_web_node_is_down_are_stored_once_each_in_order_after_it_restarts(  # noqa: E501
    pg_system: System, node: WebNode, tmp_path: Path
) -> None:
    user_token, ticket = chat_user(pg_system)
    changes: list[bool] = []
    sub = Subscriber(node.url, get_token=lambda: user_token,
                     on_connection_change=changes.append)
    await sub.start()
    try:
        await eventually_async(lambda: sub.connected)
        node.kill()
        await eventually_async(lambda: False in changes)
        sends = queue(sub, ticket, "one", "two", "three")
        await eventually_async(lambda: len(sub.pending_messages()) == 3)
        assert [m.text for m in sub.pending_messages()] == ["one", "two", "three"]
        await asyncio.sleep(1.0)  # offline: they wait, no error
        assert not any(task.done() for task in sends)
        assert stored(pg_system, ticket) == []

        restarted = WebNode(pg_system.env, tmp_path, port=node.port)
        await asyncio.to_thread(restarted.start)
        node.proc = restarted.proc
        acks = await asyncio.wait_for(asyncio.gather(*sends), 60)
        assert [a["ok"] for a in acks] == [True, True, True]
        assert [a["duplicate"] for a in acks] == [False, False, False]
        ids = [a["messageId"] for a in acks]
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert sub.pending_messages() == []
        assert stored(pg_system, ticket) == [("new-message", "one"), ("new-message", "two"),
                                             ("new-message", "three")]
    finally:
        await sub.close()


async def test_messages_left_by_a_closed_subscriber_are_sent_by_the_next_one_from_the_same_file(
    pg_system: System, tmp_path: Path
) -> None:
    user_token, ticket = chat_user(pg_system)
    path = tmp_path / "outbox.json"
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: it never connects
    first = Subscriber(nowhere, get_token=lambda: user_token, outbox=FileOutbox(path))
    starting = asyncio.create_task(first.start())
    sends = queue(first, ticket, "a", "b", "c")
    await eventually_async(lambda: len(first.pending_messages()) == 3)
    await first.close()
    await asyncio.wait_for(starting, 10)
    for task in sends:
        with pytest.raises(Unavailable) as closed:
            await task
        assert closed.value.code == "closed"
    assert [e["text"] for e in json.loads(path.read_text())] == ["a", "b", "c"]

    seen: list[list[str]] = []
    second = Subscriber(pg_system.url, get_token=lambda: user_token, outbox=FileOutbox(path),
                        on_pending_change=lambda p: seen.append([m.text for m in p]))
    assert [m.text for m in second.pending_messages()] == ["a", "b", "c"]
    await second.start()
    try:
        await eventually_async(lambda: second.pending_messages() == [])
        assert seen == [["b", "c"], ["c"], []]
        assert json.loads(path.read_text()) == []
        assert stored(pg_system, ticket) == [("new-message", "a"), ("new-message", "b"),
                                             ("new-message", "c")]
    finally:
        await second.close()


class LosesFirstAck(Subscriber):
    """A subscriber whose first `send-message` reaches the server, which stores it and
    answers, but whose ack is lost on the way back (as when the connection drops then)."""

    acks: list[Any]

    async def _emit_message(self, entry: QueuedMessage) -> Any:
        ack = await super()._emit_message(entry)
        self.acks.append(ack)
        if len(self.acks) == 1:
            raise Unavailable("ack lost", code="unavailable")
        return ack


async def test_a_message_whose_ack_was_lost_is_sent_again_and_stored_once(
    pg_system: System
) -> None:
    user_token, ticket = chat_user(pg_system)
    sub = LosesFirstAck(pg_system.url, get_token=lambda: user_token)
    sub.acks = []
    await sub.start()
    try:
        ack = await asyncio.wait_for(sub.send_message(ticket, "once", "cmid-lost-ack"), 30)
        first = sub.acks[0]
        assert first["ok"] is True and first["duplicate"] is False  # stored, ack dropped
        assert ack["ok"] is True and ack["duplicate"] is True
        assert ack["messageId"] == first["messageId"]
        assert len(sub.acks) == 2
        assert stored(pg_system, ticket) == [("new-message", "once")]
        assert sub.pending_messages() == []
    finally:
        await sub.close()


async def test_a_refused_message_raises_its_typed_error_and_leaves_the_queue(
    pg_system: System, tmp_path: Path
) -> None:
    user_token, ticket = chat_user(pg_system)
    _, others_ticket = chat_user(pg_system)
    path = tmp_path / "outbox.json"
    sub = Subscriber(pg_system.url, get_token=lambda: user_token, outbox=FileOutbox(path))
    before, blank, foreign, after = (
        asyncio.create_task(sub.send_message(t, text)) for t, text in
        [(ticket, "before"), (ticket, "   "), (others_ticket, "x"), (ticket, "after")])
    # queued before start, in order
    await eventually_async(lambda: len(sub.pending_messages()) == 4)
    await sub.start()
    try:
        assert (await asyncio.wait_for(before, 30))["ok"] is True
        with pytest.raises(Invalid) as invalid:
            await asyncio.wait_for(blank, 30)
        assert invalid.value.code == "invalid_argument"
        with pytest.raises(NotFound):  # a ticket the user may not see is as good as none
            await asyncio.wait_for(foreign, 30)
        assert (await asyncio.wait_for(after, 30))["ok"] is True
        assert sub.pending_messages() == []
        assert json.loads(path.read_text()) == []
        assert stored(pg_system, ticket) == [("new-message", "before"),
                                             ("new-message", "after")]
        assert stored(pg_system, others_ticket) == []
    finally:
        await sub.close()


# -- the queue's pure logic, over a fake server ---------------------------------------------

class FakeServer:
    """Answers each send with the next of `answers` (an ack, or an exception to raise), then
    `{"ok": True}`; records what was sent and every wait the outbox asked for."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sent: list[QueuedMessage] = []
        self.slept: list[float] = []
        self.online = asyncio.Event()
        self.online.set()

    async def emit(self, entry: QueuedMessage) -> Any:
        self.sent.append(entry)
        answer = self.answers.pop(0) if self.answers else {"ok": True, "n": len(self.sent)}
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def outbox(self, store: MemoryOutbox | None = None) -> Outbox:
        box = Outbox(store or MemoryOutbox(), emit=self.emit, online=self.online,
                     retry=Backoff(base=0.1, cap=1.0), sleep=self.sleep)
        box.start()
        return box


async def test_rate_limited_waits_retry_after_then_sends_the_same_message_again() -> None:
    server = FakeServer({"ok": False, "error": {"code": "rate_limited", "message": "slow",
                                                "retryAfter": 2.5}})
    box = server.outbox()
    try:
        ack = await asyncio.wait_for(box.send(QueuedMessage.new(1, "hi", "c1")), 5)
        assert ack["ok"] is True
        assert server.slept == [2.5]
        assert [m.client_message_id for m in server.sent] == ["c1", "c1"]
    finally:
        await box.close()


async def test_unavailable_internal_and_no_answer_are_retried_with_backoff() -> None:
    server = FakeServer({"ok": False, "error": {"code": "unavailable", "message": "db"}},
                        {"ok": False, "error": {"code": "internal", "message": "oops"}},
                        Unavailable("no answer", code="unavailable"))
    box = server.outbox()
    try:
        ack = await asyncio.wait_for(box.send(QueuedMessage.new(1, "hi")), 5)
        assert ack["ok"] is True and len(server.sent) == 4
        assert len(server.slept) == 3 and all(0 < s <= 1.0 for s in server.slept)
        assert box.pending() == []
    finally:
        await box.close()


async def test_nothing_is_sent_while_offline_and_the_queue_goes_out_in_order_once_online(
) -> None:
    server = FakeServer()
    server.online.clear()
    box = server.outbox()
    try:
        sends = [asyncio.create_task(box.send(QueuedMessage.new(1, t))) for t in "abc"]
        await eventually_async(lambda: len(box.pending()) == 3)  # all three were sent
        assert server.sent == [] and not any(task.done() for task in sends)
        assert [m.text for m in box.pending()] == ["a", "b", "c"]
        server.online.set()
        acks = await asyncio.wait_for(asyncio.gather(*sends), 5)
        assert [a["n"] for a in acks] == [1, 2, 3]
        assert [m.text for m in server.sent] == ["a", "b", "c"]
    finally:
        await box.close()


async def test_a_client_message_id_already_queued_is_queued_once_and_both_callers_get_the_ack(
) -> None:
    server = FakeServer()
    server.online.clear()
    box = server.outbox()
    try:
        first = asyncio.create_task(box.send(QueuedMessage.new(1, "hi", "same")))
        second = asyncio.create_task(box.send(QueuedMessage.new(1, "hi", "same")))
        await eventually_async(lambda: len(box.pending()) == 1)
        await asyncio.sleep(0)
        server.online.set()
        assert await asyncio.wait_for(first, 5) == await asyncio.wait_for(second, 5)
        assert len(server.sent) == 1
    finally:
        await box.close()


async def test_close_keeps_unsent_messages_in_the_store_and_tells_their_callers_closed(
) -> None:
    server = FakeServer()
    server.online.clear()
    store = MemoryOutbox()
    box = server.outbox(store)
    waiting = asyncio.create_task(box.send(QueuedMessage.new(1, "kept", "k1")))
    await eventually_async(lambda: len(store.messages) == 1)
    await box.close()
    with pytest.raises(Unavailable) as closed:
        await waiting
    assert closed.value.code == "closed"
    with pytest.raises(Unavailable):
        await box.send(QueuedMessage.new(1, "after close", "k2"))
    assert [m.client_message_id for m in store.messages] == ["k1", "k2"]
    assert server.sent == []


async def test_a_message_the_store_cannot_save_raises_from_send_and_is_not_queued() -> None:
    class Broken(MemoryOutbox):
        def save(self, messages: Any) -> None:
            raise OSError("disk full")

    server = FakeServer()
    box = server.outbox(Broken())
    try:
        with pytest.raises(OSError):
            await box.send(QueuedMessage.new(1, "lost?"))
        assert box.pending() == [] and server.sent == []
    finally:
        await box.close()


def test_a_file_outbox_round_trips_and_skips_unreadable_entries_and_files(tmp_path: Path
                                                                          ) -> None:
    path = tmp_path / "sub" / "outbox.json"
    store = FileOutbox(path)
    assert store.load() == []
    messages = [QueuedMessage.new(1, "a"), QueuedMessage.new(2, "b")]
    store.save(messages)
    assert store.load() == messages
    assert [p.name for p in path.parent.iterdir()] == ["outbox.json"]  # no temporary left
    good = messages[0].to_dict()
    path.write_text(json.dumps([good, {"ticketId": "1", "text": "x", "clientMessageId": "c"},
                                {"text": "no ticket"}, 7]))
    assert store.load() == [messages[0]]
    path.write_text("{not json")
    assert store.load() == []


def test_herald_errors_are_typed_for_every_refusal_code_of_send_message() -> None:
    assert isinstance(error_from_ack({"code": "invalid_message"}), Invalid)
    assert isinstance(error_from_ack({"code": "duplicate_client_message_id"}), Conflict)
    assert isinstance(error_from_ack({"code": "forbidden"}), Forbidden)
    assert isinstance(error_from_ack({"code": "something-else"}), HeraldError)


async def test_a_connection_lost_while_waiting_for_the_ack_sends_the_message_again_after_the_reconnect(  # noqa: E501
) -> None:
    # A small in-process Socket.IO server (Herald never drops a socket mid-call on purpose):
    # it receives the first send-message, then drops the socket before answering.
    server = socketio.AsyncServer(async_mode="aiohttp")
    received: list[str] = []

    @server.event  # type: ignore[misc]
    async def connect(sid: str, environ: Any, auth: Any) -> None:
        async def greet() -> None:
            await asyncio.sleep(0.05)
            await server.emit("connected", {"userId": 1, "recovered": {}, "positions": {}},
                              to=sid)
        server.start_background_task(greet)

    @server.on("send-message")  # type: ignore[misc]
    async def send_message(sid: str, data: Any) -> Any:
        received.append(data["clientMessageId"])
        if len(received) == 1:
            await server.disconnect(sid)
            return None
        return {"ok": True, "messageId": 7, "duplicate": True}

    app = web.Application()
    server.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sub = Subscriber(f"http://127.0.0.1:{port}", get_token=lambda: "t", call_timeout=120)
    try:
        await sub.start()
        # far below call_timeout: the lost connection, not a timeout, ended the first wait
        ack = await asyncio.wait_for(sub.send_message(1, "hello", "c-lost"), 30)
        assert ack == {"ok": True, "messageId": 7, "duplicate": True}
        assert received == ["c-lost", "c-lost"]
        assert sub.pending_messages() == []
    finally:
        await sub.close()
        await runner.cleanup()
