"""Presence on the real system: who is in a project's or ticket's room, across two web nodes
(their own processes, with a short HERALD_PRESENCE_TTL), once per user whatever the tabs;
a node killed with -9 takes its users out within the TTL; never stored, never replayed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.clients import Api, Received, SocketClient
from testkit.processes import WebNode
from testkit.system import System
from testkit.world import World

TTL = 2.0


@pytest.fixture(scope="module")
def nodes(pg_system_session: System, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[list[WebNode]]:
    env = {**pg_system_session.env, "HERALD_PRESENCE_TTL": str(TTL)}
    log_dir: Path = tmp_path_factory.mktemp("presence")
    webs = [WebNode(env, log_dir), WebNode(env, log_dir)]
    for web in webs:
        web.start()
    yield webs
    for web in webs:
        web.stop()


def presence(events: list[Received], stream: str) -> list[tuple[str, Any]]:
    """The presence events of `stream`, as (name, user id)."""
    return [(e.name, e.payload["user"]["userId"] if e.name == "presence-join"
             else e.payload["userId"])
            for e in events if e.name.startswith("presence-") and e.payload["stream"] == stream]


def ids(ack: dict[str, Any]) -> list[int]:
    return sorted(m["userId"] for m in ack["presence"])


def test_join_acks_and_events_say_who_is_in_the_room_on_either_node(
        world: World, nodes: list[WebNode]) -> None:
    ticket = world.fresh_ticket()
    stream = f"ticket-{ticket}"
    tech, client = world.ids["technician"], world.ids["client"]

    async def run() -> None:
        a = SocketClient(nodes[0].url, world.token("technician"))
        b = SocketClient(nodes[1].url, world.token("client"))
        await a.connect()
        await b.connect()
        ack = await a.call("join-ticket", ticket)
        assert ack["ok"] and ack["presence"] == [
            {"userId": tech, "name": "technician", "role": "technician"}]
        ack = await b.call("join-ticket", {"ticketId": ticket})
        assert ids(ack) == sorted([tech, client])
        await a.wait_for(lambda: presence(a.events, stream) == [("presence-join", client)])
        [joined] = a.named("presence-join")
        assert joined.payload == {"stream": stream, "user": {
            "userId": client, "name": "client", "role": "client"}}
        assert joined.meta is None  # ephemeral: no offset
        await b.close()  # a clean disconnect: gone at once
        await a.wait_for(lambda: presence(a.events, stream)[-1:] == [("presence-leave", client)])
        await a.close()
    asyncio.run(run())


def test_a_second_tab_is_no_new_join_and_one_leave_is_no_leave(
        world: World, nodes: list[WebNode]) -> None:
    ticket = world.fresh_ticket()
    stream = f"ticket-{ticket}"
    client, admin = world.ids["client"], world.ids["admin"]

    async def run() -> None:
        watcher = SocketClient(nodes[0].url, world.token("technician"))
        tabs = [SocketClient(nodes[0].url, world.token("client")),
                SocketClient(nodes[1].url, world.token("client")),
                SocketClient(nodes[1].url, world.token("client"))]
        sentinel = SocketClient(nodes[0].url, world.token("admin"))
        for socket in (watcher, *tabs, sentinel):
            await socket.connect()
        await watcher.call("join-ticket", ticket)
        for tab in tabs:
            assert (await tab.call("join-ticket", ticket))["ok"]
        # Two tabs leave (one by leave-ticket, one by closing); then the sentinel joins and
        # leaves: its events come after any the tabs caused, on the same channel.
        assert (await tabs[0].call("leave-ticket", ticket))["ok"]
        await tabs[1].close()
        await asyncio.sleep(0)
        await sentinel.call("join-ticket", ticket)
        await sentinel.call("leave-ticket", ticket)
        await watcher.wait_for(
            lambda: presence(watcher.events, stream)[-1:] == [("presence-leave", admin)])
        assert presence(watcher.events, stream) == [
            ("presence-join", client), ("presence-join", admin), ("presence-leave", admin)]
        http = Api(nodes[1].url, world.system.admin_token)
        members = http.ok("GET", f"/api/streams/{stream}/presence")["members"]
        assert sorted(m["userId"] for m in members) == sorted([client,
                                                               world.ids["technician"]])
        await tabs[2].close()  # the last tab: now the client leaves
        await watcher.wait_for(
            lambda: presence(watcher.events, stream)[-1:] == [("presence-leave", client)])
        http.close()
        for socket in (watcher, sentinel):
            await socket.close()
    asyncio.run(run())


def test_a_node_killed_with_sigkill_takes_its_users_out_within_the_ttl(
        world: World, nodes: list[WebNode], pg_system_session: System, tmp_path: Path) -> None:
    ticket = world.fresh_ticket()
    stream = f"ticket-{ticket}"
    client = world.ids["client"]
    doomed = WebNode({**pg_system_session.env, "HERALD_PRESENCE_TTL": str(TTL)}, tmp_path)
    doomed.start()

    async def run() -> float:
        watcher = SocketClient(nodes[0].url, world.token("technician"))
        victim = SocketClient(doomed.url, world.token("client"))
        await watcher.connect()
        await victim.connect()
        await watcher.call("join-ticket", ticket)
        await victim.call("join-ticket", ticket)
        await watcher.wait_for(lambda: ("presence-join", client) in presence(watcher.events,
                                                                           stream))
        killed = time.monotonic()
        doomed.kill()
        await watcher.wait_for(
            lambda: ("presence-leave", client) in presence(watcher.events, stream),
            timeout=TTL * 10)
        took = time.monotonic() - killed
        http = Api(nodes[1].url, world.system.admin_token)
        members = http.ok("GET", f"/api/streams/{stream}/presence")["members"]
        assert [m["userId"] for m in members] == [world.ids["technician"]]
        http.close()
        await watcher.close()
        await victim.sio.eio.disconnect(abort=True)
        return took
    took = asyncio.run(run())
    print(f"presence-leave seen {took:.2f}s after SIGKILL (HERALD_PRESENCE_TTL={TTL})")


def test_presence_over_http_follows_the_streams_read_rules(
        world: World, nodes: list[WebNode]) -> None:
    ticket = world.fresh_ticket()
    http = Api(nodes[0].url, world.system.admin_token)

    async def run() -> None:
        tech = SocketClient(nodes[1].url, world.token("technician"))
        await tech.connect()
        await tech.call("join-project", world.project)
        await tech.call("join-ticket", ticket)
        for stream in (f"project-{world.project}", f"ticket-{ticket}"):
            body = http.ok("GET", f"/api/streams/{stream}/presence",
                           token=world.token("client"))
            assert body == {"members": [{"userId": world.ids["technician"],
                                         "name": "technician", "role": "technician"}]}
        await tech.close()
    asyncio.run(run())
    for stream, tok in ((f"ticket-{ticket}", world.token("other-client")),
                        (f"project-{world.project}", world.token("other-technician")),
                        ("ticket-99999999", world.token("admin")),
                        (f"user-{world.ids['client']}", world.token("client")),
                        ("clients", world.token("client")),
                        ("nonsense", world.token("client"))):
        response = http.request("GET", f"/api/streams/{stream}/presence", token=tok)
        assert response.status_code == 404, (stream, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert http.request("GET", f"/api/streams/ticket-{ticket}/presence",
                        token="").status_code == 401
    http.close()


def test_presence_events_are_neither_stored_nor_replayed(
        world: World, nodes: list[WebNode]) -> None:
    ticket = world.fresh_ticket()
    stream = f"ticket-{ticket}"
    http = Api(nodes[0].url, world.system.admin_token)

    async def run() -> None:
        tech = SocketClient(nodes[0].url, world.token("technician"))
        client = SocketClient(nodes[1].url, world.token("client"))
        await tech.connect()
        await client.connect()
        ack = await tech.call("join-ticket", ticket)
        await client.call("join-ticket", ticket)
        await client.call("send-message", {"ticketId": ticket, "message": "hello"})
        await tech.wait_for(lambda: len(presence(tech.events, stream)) == 1)
        await client.close()
        await tech.wait_for(lambda: len(presence(tech.events, stream)) == 2)
        await tech.wait_count("new-message", 1)
        await tech.close()

        # From the start of the stream: the message again, no presence event.
        back = SocketClient(nodes[1].url, world.token("admin"))
        await back.connect()
        again = await back.call("join-ticket", {"ticketId": ticket, "position": {
            "offset": 0, "epoch": ack["epoch"]}})
        assert again["recovered"] is True
        await back.wait_count("new-message", 1)
        assert [e.name for e in back.events if e.name.startswith("presence-")] == []
        await back.close()
    asyncio.run(run())
    events = http.ok("GET", f"/api/streams/{stream}/events?after=0")["events"]
    assert [e["type"] for e in events] == ["new-message"]
    http.close()


def test_a_technician_taken_off_the_project_leaves_its_rooms_presence(
        world: World, nodes: list[WebNode]) -> None:
    http = Api(nodes[0].url, world.system.admin_token)
    tech_id = world.ids["technician"]
    project = http.ok("POST", "/api/projects", json={
        "name": "Q", "clientId": world.ids["client"], "technicianIds": [tech_id]})["id"]
    ticket = http.ok("POST", "/api/tickets", json={"projectId": project, "subject": "S"})["id"]
    stream = f"ticket-{ticket}"

    async def run() -> None:
        watcher = SocketClient(nodes[0].url, world.token("admin"))
        tech = SocketClient(nodes[1].url, world.token("technician"))
        await watcher.connect()
        await tech.connect()
        await watcher.call("join-ticket", ticket)
        await tech.call("join-ticket", ticket)
        await watcher.wait_for(lambda: presence(watcher.events, stream) == [
            ("presence-join", tech_id)])
        http.ok("PATCH", f"/api/projects/{project}", json={"technicianIds": []})
        await watcher.wait_for(lambda: presence(watcher.events, stream)[-1:] == [
            ("presence-leave", tech_id)], timeout=TTL * 10)
        assert http.ok("GET", f"/api/streams/{stream}/presence")["members"] == [
            {"userId": world.ids["admin"], "name": "root", "role": "admin"}]
        for socket in (watcher, tech):
            await socket.close()
    asyncio.run(run())
    http.close()


def test_a_node_stopped_cleanly_takes_its_users_out_at_once(
        world: World, nodes: list[WebNode], pg_system_session: System, tmp_path: Path) -> None:
    ticket = world.fresh_ticket()
    stream = f"ticket-{ticket}"
    client = world.ids["client"]
    # A TTL far beyond the wait below: only a clean leave can be seen in time.
    stopping = WebNode({**pg_system_session.env, "HERALD_PRESENCE_TTL": "600"}, tmp_path)
    stopping.start()

    async def run() -> None:
        watcher = SocketClient(nodes[0].url, world.token("technician"))
        leaving = SocketClient(stopping.url, world.token("client"))
        await watcher.connect()
        await leaving.connect()
        await watcher.call("join-ticket", ticket)
        await leaving.call("join-ticket", ticket)
        await watcher.wait_for(lambda: ("presence-join", client) in presence(watcher.events,
                                                                            stream))
        stopping.stop()  # SIGTERM
        await watcher.wait_for(
            lambda: ("presence-leave", client) in presence(watcher.events, stream), timeout=30)
        await watcher.close()
        await leaving.sio.eio.disconnect(abort=True)
    asyncio.run(run())
