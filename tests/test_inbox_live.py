"""The inbox on the real system (PostgreSQL, two web nodes, a Celery worker): every tab and
device converges on the same counts through `inbox-updated`, offline ones on replay; the
HTTP routes and `inbox-mark` refuse what is not the caller's."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from testkit.clients import SocketClient, sentinel
from testkit.eventually import eventually
from testkit.world import World


@pytest.fixture(scope="module")
def world(world: World) -> World:
    """conftest's world, with a second web node."""
    if len(world.system.webs) < 2:
        world.system.add_web()
    return world


def notify(world: World, **target: Any) -> str:
    body = {"type": "info", "title": "Hello", "message": "there", **target}
    return str(world.api.ok("POST", "/api/notifications", json=body)["id"])


def last_counts(socket: SocketClient) -> dict[str, Any]:
    return dict(socket.named("inbox-updated")[-1].payload["counts"])


def test_two_tabs_on_two_nodes_and_an_offline_device_converge_on_the_same_counts(
        world: World) -> None:
    uid, tok = world.api.user("client")
    stream = f"user-{uid}"

    async def run() -> None:
        a = SocketClient(world.system.webs[0].url, tok)
        b = SocketClient(world.system.webs[1].url, tok)
        offline = SocketClient(world.system.webs[1].url, tok)
        for socket in (a, b, offline):
            await socket.connect()
        [connected] = await offline.wait_count("connected", 1)
        position = connected.payload["positions"][stream]
        await offline.close()

        ids = [notify(world, userId=uid) for _ in range(3)] + [notify(world, role="client")]
        for socket in (a, b):
            await socket.wait_count("notification", 4)
        ack = await a.call("inbox-mark", {"action": "read", "ids": ids[:1]})
        assert ack == {"ok": True, "counts": {"unread": 3, "unseen": 3, "countsCapped": False}}
        ack = await b.call("inbox-mark", {"action": "archive", "ids": [ids[1]]})
        assert ack["counts"]["unread"] == 2
        world.system.api(1).ok("POST", "/api/inbox/read", token=tok, json={"all": True})
        notify(world, userId=uid)
        for socket in (a, b):
            await socket.wait_count("inbox-updated", 3)
            await socket.wait_count("notification", 5)
        now = world.api.ok("GET", "/api/inbox", token=tok)["counts"]
        assert now == {"unread": 1, "unseen": 1, "countsCapped": False}
        assert last_counts(a) == last_counts(b) == {"unread": 0, "unseen": 0,
                                                    "countsCapped": False}
        assert [u.payload["all"] for u in a.named("inbox-updated")] == [None, None, "read"]
        assert a.named("inbox-updated")[1].payload["archived"] == [ids[1]]

        # The offline device comes back with its position: the same changes, in order.
        back = SocketClient(world.system.webs[0].url, tok, positions={stream: position})
        await back.connect()
        await back.wait_count("inbox-updated", 3)
        await back.wait_count("notification", 4)  # its own stream's (the role's is live)
        assert [u.payload for u in back.named("inbox-updated")] == [
            u.payload for u in a.named("inbox-updated")]
        for socket in (a, b, back):
            await socket.close()

    asyncio.run(run())


def test_inbox_mark_refuses_foreign_ids_and_bad_arguments_and_changes_nothing(
        world: World) -> None:
    uid, tok = world.api.user("client")
    other, _ = world.api.user("client")
    mine = notify(world, userId=uid)
    theirs = notify(world, userId=other)
    techs = notify(world, role="technician")

    async def run() -> None:
        socket = SocketClient(world.system.webs[1].url, tok)
        await socket.connect()
        for bad in (theirs, techs, str(uuid.uuid4())):
            ack = await socket.call("inbox-mark", {"action": "read", "ids": [mine, bad]})
            assert ack["ok"] is False and ack["error"]["code"] == "not_found", ack
        for arg in ("read", {"action": "read"}, {"action": "burn", "ids": [mine]},
                    {"action": "archive", "all": True}, {"action": "read", "ids": [7]},
                    {"action": "read", "ids": [mine, "nope"]},
                    {"action": "unread", "ids": [mine, "a\x00b"]}):
            ack = await socket.call("inbox-mark", arg)
            assert ack["ok"] is False and ack["error"]["code"] == "invalid_argument", arg
        unread = world.api.ok("GET", "/api/inbox", token=tok)["counts"]["unread"]
        ack = await socket.call("inbox-mark", {"action": "seen", "all": True})
        assert ack["counts"] == {"unread": unread, "unseen": 0, "countsCapped": False}
        await socket.wait_count("inbox-updated", 1)
        await sentinel(world.api, socket, uid)  # next on the same stream
        assert len(socket.named("inbox-updated")) == 1  # the refused ones wrote nothing
        await socket.close()

    asyncio.run(run())


def test_http_inbox_lists_marks_and_refuses_foreign_ids_with_404(world: World) -> None:
    api = world.api
    uid, tok = api.user("client")
    other, other_tok = api.user("client")
    for who in (tok, other_tok):  # what the clients stream holds from other tests
        api.ok("POST", "/api/inbox/read", token=who, json={"all": True})
    first, second = notify(world, userId=uid), notify(world, userId=uid)
    theirs = notify(world, userId=other)

    page = api.ok("GET", "/api/inbox?state=unread&limit=1", token=tok)
    assert [i["id"] for i in page["items"]] == [second] and page["hasMore"] is True
    page = api.ok("GET", f"/api/inbox?state=unread&limit=1&before={second}", token=tok)
    assert [i["id"] for i in page["items"]] == [first] and page["hasMore"] is False

    refused = api.request("POST", "/api/inbox/read", token=tok, json={"ids": [first, theirs]})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert api.ok("GET", "/api/inbox", token=tok)["counts"]["unread"] == 2
    assert api.ok("GET", "/api/inbox", token=other_tok)["counts"]["unread"] == 1

    assert api.ok("POST", "/api/inbox/archive", token=tok, json={"ids": [first]}) == {
        "counts": {"unread": 1, "unseen": 1, "countsCapped": False}}
    archived = api.ok("GET", "/api/inbox?state=archived", token=tok)["items"]
    assert [(i["id"], i["archived"]) for i in archived] == [(first, True)]
    for path, body in (("/api/inbox/read", {}), ("/api/inbox/read", {"ids": []}),
                       ("/api/inbox/archive", {"all": True}),
                       ("/api/inbox/read", {"ids": [first], "all": True}),
                       ("/api/inbox/read", {"all": False}),
                       ("/api/inbox/read", {"ids": [first], "extra": 1}),
                       ("/api/inbox/read", {"ids": ["nope"]}),  # not a UUID
                       ("/api/inbox/unread", {"ids": [first, "a\x00b"]})):  # PostgreSQL: no NUL
        response = api.request("POST", path, token=tok, json=body)
        assert response.status_code == 422, (path, body, response.text)
    for query in ("state=new", "limit=0", "limit=201"):
        assert api.request("GET", f"/api/inbox?{query}", token=tok).status_code == 422
    for before in ("nope", "%00", first[:-1] + "%00"):
        assert api.request("GET", f"/api/inbox?before={before}", token=tok).status_code == 404
    service = api.request("GET", "/api/inbox", token=world.token("service"))
    assert service.status_code == 403
    assert api.request("GET", "/api/inbox", token="").status_code == 401


def test_mark_all_read_while_notifications_arrive_leaves_exactly_the_newer_ones_unread(
        world: World) -> None:
    """Notifications keep coming (another web node, another thread) while the user marks all
    read: afterwards the unread items of their stream are exactly its newest ones (a suffix:
    no older one left unread, no newer one lost), and the counts agree."""
    uid, tok = world.api.user("technician")
    stream = f"user-{uid}"
    world.api.ok("POST", "/api/inbox/read", token=tok, json={"all": True})  # the role's
    stop = threading.Event()
    written: list[str] = []

    def publish() -> None:
        api = world.system.api(1)
        try:
            while not stop.is_set() and len(written) < 200:
                written.append(notify_on(api, userId=uid))
        finally:
            api.close()

    async def run() -> dict[str, Any]:
        socket = SocketClient(world.system.webs[0].url, tok)
        await socket.connect()
        thread = threading.Thread(target=publish)
        thread.start()
        try:
            await asyncio.to_thread(lambda: _until(lambda: len(written) >= 10))
            ack = await socket.call("inbox-mark", {"action": "read", "all": True})
            assert ack["ok"] is True
            await asyncio.to_thread(lambda: _until(lambda: len(written) >= 30))
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 30)
            await socket.close()
        return dict(ack["counts"])

    at_mark = asyncio.run(run())
    body = world.api.ok("GET", "/api/inbox?state=unread&limit=200", token=tok)
    offsets = sorted(i["offset"] for i in body["items"] if i["stream"] == stream)
    everything = world.api.ok("GET", "/api/inbox?limit=200", token=tok)["items"]
    mine = sorted(i["offset"] for i in everything if i["stream"] == stream)
    assert len(mine) == len(written)
    assert offsets == mine[len(mine) - len(offsets):], "the unread ones are the newest"
    assert 0 < len(offsets) < len(written)
    assert at_mark["unread"] <= len(offsets)  # as of the mark; later ones came on top
    assert body["counts"]["unread"] == len(offsets)


def notify_on(api: Any, **target: Any) -> str:
    body = {"type": "info", "title": "Hello", "message": "there", **target}
    return str(api.ok("POST", "/api/notifications", json=body)["id"])


def _until(what: Any, timeout: float = 30) -> None:
    eventually(what, "timed out", timeout, interval=0.01)
